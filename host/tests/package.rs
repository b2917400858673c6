//! `legion package` against real parts: Debian's `docker-registry` on
//! loopback, the Python base image scripts/base-image.sh builds from
//! Debian's packages, the real docker-rest plugin and pip. The images are
//! read back by independent tools (skopeo, umoci) and run with podman.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::podman::{self, Container};
use common::registry::{base_layout, Registry};
use common::{free_port, train_iris, train_wine, Legion, IRIS_COLS, IRIS_ROWS};
use serde_json::{json, Value};

fn package(l: &Legion, args: &[&str]) -> Value {
    let mut all = vec!["package"];
    all.extend_from_slice(args);
    let out = l.json(&all);
    assert_eq!(out["run"]["state"], "succeeded", "{out:#}");
    out
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect_config(image: &str) -> Value {
    let text = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{image}"),
    ]);
    serde_json::from_str(&text).unwrap()
}

/// The stored model's layer digest and its file bytes.
fn model_layer(l: &Legion, model: &str) -> (String, u64) {
    let shown = l.json(&["models", "show", model]);
    let layer = shown["manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let size = shown["manifest"]["layers"][0]["size"].as_u64().unwrap();
    (layer, size)
}

#[test]
fn pushed_images_are_read_by_skopeo_and_umoci_repeat_their_digest_and_repackage_cheaply() {
    let registry = Registry::start();
    let base = registry.python_base();
    let l = Legion::new();
    let model_digest = train_iris(&l);
    let (model_blob, model_bytes) = model_layer(&l, "iris:1");
    let target = format!("{}/models/iris", registry.addr);

    let first = package(&l, &["iris:1", "--base", &base, "--push", &target]);
    let digest = first["run"]["imageDigest"].as_str().unwrap().to_string();
    let image = format!("{target}:1");
    assert_eq!(
        first["run"]["imageRef"],
        format!("{image}@{digest}"),
        "without a tag the model's version is the tag"
    );

    // skopeo reads the config the plan asked for.
    let config = inspect_config(&image);
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(["/opt/legion/bin/legion-serve"]));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/opt/legion");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c:#}");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "LEGION_MODEL_NAME=iris",
        "LEGION_MODEL_VERSION=1",
        "LEGION_SERVE_PORT=8080",
        "PYTHONPATH=/opt/legion/python",
        "PYTHON_VERSION=3.11.2",
    ] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    let labels = &c["Labels"];
    assert_eq!(labels["org.legion-platform.model.digest"], model_digest);
    assert_eq!(labels["org.opencontainers.image.title"], "iris");
    assert_eq!(labels["org.opencontainers.image.version"], "1");
    assert!(labels["org.legion-platform.packager"]
        .as_str()
        .unwrap()
        .starts_with("docker-rest@sha256:"));
    assert!(labels["org.legion-platform.trainer"]
        .as_str()
        .unwrap()
        .starts_with("python@sha256:"));
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");

    // The model's stored layer is in the image byte for byte.
    let manifest: Value = serde_json::from_slice(&registry.raw_manifest("models/iris:1")).unwrap();
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert!(layers.contains(&model_blob.as_str()), "{layers:?}");
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        base
    );

    // umoci unpacks a skopeo copy into a root file system with everything
    // at its documented path.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:iris", layout.display()),
    ]);
    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:iris", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci is not installed: run scripts/setup.sh");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs");
    for path in [
        "model/model.pkl",
        "legion-model.json",
        "opt/legion/bin/legion-serve",
        "opt/legion/python/sklearn/__init__.py",
        "opt/legion/python/pandas/__init__.py",
        "usr/bin/python3",
    ] {
        assert!(rootfs.join(path).exists(), "/{path} is not in the image");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("opt/legion/bin/legion-serve"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let spec: Value =
        serde_json::from_slice(&std::fs::read(rootfs.join("legion-model.json")).unwrap()).unwrap();
    assert_eq!(spec["digest"], model_digest);

    // Identical inputs, identical image; nothing is uploaded again.
    let again = package(&l, &["iris:1", "--base", &base, "--push", &target]);
    assert_eq!(again["run"]["imageDigest"], digest.as_str());
    assert_eq!(again["push"]["blobsPushed"], 0, "{:#}", again["push"]);

    // Rebuilt from nothing (no dependency cache, no local images): still
    // the same image.
    for dir in ["cache/python-layers", "images"] {
        std::fs::remove_dir_all(l.home.path().join(dir)).unwrap();
    }
    let rebuilt = package(&l, &["iris:1", "--base", &base, "--push", &target]);
    assert_eq!(rebuilt["run"]["imageDigest"], digest.as_str());

    // A changed argument is a new image that moves only its config: no
    // model bytes, no dependency bytes.
    let changed = package(
        &l,
        &[
            "iris:1",
            "--base",
            &base,
            "--push",
            &format!("{target}:w2"),
            "--arg",
            "workers=2",
        ],
    );
    assert_ne!(changed["run"]["imageDigest"], digest.as_str());
    let push = &changed["push"];
    let manifest: Value = serde_json::from_slice(&registry.raw_manifest("models/iris:w2")).unwrap();
    assert_eq!(push["blobsPushed"], 1, "only the config is new: {push:#}");
    assert_eq!(push["bytesPushed"], manifest["config"]["size"], "{push:#}");
    let skipped = push["bytesSkipped"].as_u64().unwrap();
    assert!(
        skipped > model_bytes,
        "the model, server and dependency layers were not sent again"
    );
    let c = inspect_config(&format!("{target}:w2"));
    assert!(c["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&json!("LEGION_SERVE_WORKERS=2")));

    // The base's layers never came to this machine: the registry had them.
    let base_manifest: Value =
        serde_json::from_slice(&registry.raw_manifest("base/python:3")).unwrap();
    for layer in base_manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert!(
            !l.home.path().join("images/blobs/sha256").join(hex).exists(),
            "base layer {hex} was downloaded"
        );
    }

    // A base with Docker v2 media types works the same; the image is OCI.
    let docker_base =
        registry.copy_in_as(&format!("oci:{}", base_layout()), "base/docker:3", "v2s2");
    let docker_manifest: Value =
        serde_json::from_slice(&registry.raw_manifest("base/docker:3")).unwrap();
    assert_eq!(
        docker_manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    package(
        &l,
        &[
            "iris:1",
            "--base",
            &docker_base,
            "--push",
            &format!("{target}:docker"),
        ],
    );
    let m: Value = serde_json::from_slice(&registry.raw_manifest("models/iris:docker")).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"));
    assert_eq!(
        inspect_config(&format!("{target}:docker"))["config"]["User"],
        "1000:1000"
    );

    // Runs record the kind; images are listed.
    let runs = l.json(&["runs", "ls"]);
    let kinds: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"packaging") && kinds.contains(&"training"),
        "{kinds:?}"
    );
    let images = l.json(&["images", "ls"]);
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["digest"] == digest.as_str()),
        "{images:#}"
    );
}

#[test]
fn a_local_package_lands_in_the_image_layout_from_a_layout_base() {
    let l = Legion::new();
    train_iris(&l);
    let base = format!("oci:{}", base_layout());
    let out = package(&l, &["iris:1", "--base", &base]);
    let image_ref = out["run"]["imageRef"].as_str().unwrap();
    let layout = l.home.path().join("images");
    assert_eq!(image_ref, format!("oci:{}:iris:1", layout.display()));
    // skopeo reads the local layout as it is.
    let inspected: Value = serde_json::from_str(&skopeo(&["inspect", image_ref])).unwrap();
    assert_eq!(inspected["Digest"], out["run"]["imageDigest"]);
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.ref.name"],
        "iris:1"
    );
    let listed = l.json(&["images", "ls"]);
    assert_eq!(listed[0]["reference"], image_ref);
    assert_eq!(listed[0]["model"], "iris:1");
    let run = l.json(&["runs", "show", out["run"]["id"].as_str().unwrap()]);
    assert_eq!(run["kind"], "packaging");
    assert_eq!(run["plan"]["user"], "1000:1000");

    // A model given as a registry reference is pulled, then packaged: on
    // another data dir, the same model and base give the same image.
    let registry = Registry::start();
    let model = registry.copy_in(
        &format!("oci:{}:iris:1", l.home.path().join("models").display()),
        "models/iris-model:1",
    );
    let other = Legion::new();
    let again = package(&other, &[&model, "--base", &base]);
    assert_eq!(again["run"]["imageDigest"], out["run"]["imageDigest"]);
}

/// Polls `url` until it answers 200; a hang guard, not a timing check.
fn wait_ready(client: &reqwest::blocking::Client, url: &str, c: &Container) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = client.get(url).send() {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never became ready; container log:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    let r = client.post(url).json(body).send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[test]
fn packaged_images_serve_the_models_own_predictions_under_podman() {
    if !podman::available("packaged_images_serve_the_models_own_predictions_under_podman") {
        return;
    }
    let registry = Registry::start();
    let base = registry.python_base();
    let l = Legion::new();
    train_iris(&l);
    train_wine(&l);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // iris, trained with the python toolchain.
    let iris = format!("{}/models/iris:1", registry.addr);
    package(&l, &["iris:1", "--base", &base, "--push", &iris]);
    let expected: Value = serde_json::from_str(&podman::python_in(&iris, &format!(
        "import pickle, json, pandas as pd\nm = pickle.load(open('/model/model.pkl', 'rb'))\nprint(json.dumps(m.predict(pd.DataFrame({:?}, columns={:?})).tolist()))",
        IRIS_ROWS, IRIS_COLS
    ))).unwrap();
    let port = free_port();
    let c = Container::start(&iris, &[("LEGION_SERVE_PORT", port.to_string())]);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &format!("{url}/v2/health/ready"), &c);
    // Names come from the server's own metadata.
    let meta: Value = client
        .get(format!("{url}/v2/models/iris"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let inputs: Vec<Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            let col = IRIS_COLS.iter().position(|c| *c == name).unwrap();
            json!({"name": name, "datatype": i["datatype"], "shape": [3], "data": IRIS_ROWS.iter().map(|r| r[col]).collect::<Vec<_>>()})
        })
        .collect();
    let oip = post(
        &client,
        &format!("{url}/v2/models/iris/infer"),
        &json!({"inputs": inputs}),
    );
    assert_eq!(oip["outputs"][0]["data"], expected, "OIP v2");
    assert_eq!(oip["outputs"][0]["name"], meta["outputs"][0]["name"]);
    let mlflow = post(
        &client,
        &format!("{url}/invocations"),
        &json!({"dataframe_split": {"columns": IRIS_COLS, "data": IRIS_ROWS}}),
    );
    assert_eq!(mlflow["predictions"], expected, "/invocations");
    let legion = post(
        &client,
        &format!("{url}/api/model/invoke"),
        &json!({"columns": IRIS_COLS, "data": IRIS_ROWS}),
    );
    let rows: Vec<Value> = expected
        .as_array()
        .unwrap()
        .iter()
        .map(|v| json!([v]))
        .collect();
    assert_eq!(legion["prediction"], json!(rows), "/api/model/invoke");
    drop(c);

    // wine, trained with MLflow.
    let wine = format!("{}/models/wine:1", registry.addr);
    package(&l, &["wine:1", "--base", &base, "--push", &wine]);
    let expected: Value = serde_json::from_str(&podman::python_in(
        &wine,
        "import json, pandas as pd, mlflow.pyfunc\nm = mlflow.pyfunc.load_model('/model')\nex = json.load(open('/model/input_example.json'))\nprint(json.dumps({'example': ex, 'predictions': [float(x) for x in m.predict(pd.DataFrame(ex['data'], columns=ex['columns']))]}))",
    ))
    .unwrap();
    let port = free_port();
    let c = Container::start(&wine, &[("LEGION_SERVE_PORT", port.to_string())]);
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &format!("{url}/v2/health/ready"), &c);
    let example = &expected["example"];
    let r = post(
        &client,
        &format!("{url}/invocations"),
        &json!({"dataframe_split": example}),
    );
    assert_eq!(
        r["predictions"], expected["predictions"],
        "/invocations gives MLflow's own numbers"
    );
    let cols = example["columns"].as_array().unwrap();
    let data = example["data"].as_array().unwrap();
    let tensors: Vec<Value> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": c, "shape": [data.len()], "datatype": "FP64", "data": data.iter().map(|row| row[i].clone()).collect::<Vec<_>>()}))
        .collect();
    let oip = post(
        &client,
        &format!("{url}/v2/models/wine/infer"),
        &json!({"inputs": tensors}),
    );
    assert_eq!(oip["outputs"][0]["data"], expected["predictions"], "OIP v2");
}

fn run_state(l: &Legion) -> Value {
    let runs = l.json(&["runs", "ls"]);
    runs.as_array().unwrap()[0].clone()
}

/// Makes an image layout holding an image with no Python: one layer with
/// a single text file, made by umoci (unpack, add the file, repack).
fn no_python_base(dir: &Path) -> String {
    let layout = dir.join("nopython");
    let bundle = dir.join("bundle");
    let image = format!("{}:bare", layout.display());
    let umoci = |args: &[&str]| {
        let out = Command::new("umoci").args(args).output().expect("umoci");
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (l, b) = (layout.display().to_string(), bundle.display().to_string());
    umoci(&["init", "--layout", &l]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, &b]);
    std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
    std::fs::write(bundle.join("rootfs/etc/motd"), "no python here\n").unwrap();
    umoci(&["repack", "--image", &image, &b]);
    format!("oci:{image}")
}

#[test]
fn bad_packaging_input_is_refused_clearly_and_names_nothing() {
    let registry = Registry::start();
    let base = registry.python_base();
    let l = Legion::new();
    train_iris(&l);
    let images = || l.json(&["images", "ls"]).as_array().unwrap().len();

    // A model that does not exist: refused before a run exists.
    let before = l.files();
    let err = l.fails(&["package", "nope:1", "--base", &base]);
    assert!(err.contains("no stored model 'nope:1'"), "{err}");
    assert_eq!(l.files(), before, "a refused packaging writes nothing");

    // Unknown and invalid packager arguments name themselves.
    let err = l.fails(&["package", "iris:1", "--base", &base, "--arg", "prot=9000"]);
    assert!(
        err.contains("unknown argument 'prot'") && err.contains("port"),
        "{err}"
    );
    assert_eq!(run_state(&l)["state"], "failed");
    // A value outside the bounds the packager declares (contract 0.2.0):
    // the host refuses it before a run exists.
    let before = l.files();
    let err = l.fails(&["package", "iris:1", "--base", &base, "--arg", "port=0"]);
    assert!(
        err.contains("--arg port")
            && err.contains("toolchain 'docker-rest'")
            && err.contains("'0' is not a whole number from 1 to 65535"),
        "{err}"
    );
    assert_eq!(l.files(), before, "a refused packaging writes nothing");

    // An unreachable registry.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let err = l.fails(&[
        "package",
        "iris:1",
        "--base",
        &base,
        "--push",
        &format!("{dead_addr}/models/iris"),
    ]);
    assert!(
        err.contains(&format!("registry {dead_addr}/models/iris:1")),
        "{err}"
    );

    // A base with no Python.
    let dir = tempfile::tempdir().unwrap();
    let bare = no_python_base(dir.path());
    let err = l.fails(&["package", "iris:1", "--base", &bare]);
    assert!(
        err.contains(&format!("base image {bare}: it has no Python")),
        "{err}"
    );
    let err = l.fails(&[
        "package",
        "iris:1",
        "--base",
        &format!("{}/base/none:1", registry.addr),
    ]);
    assert!(
        err.contains("base image") && err.contains("base/none:1"),
        "{err}"
    );

    // A plan whose layer would escape the image root, or run as root.
    l.ok(&[
        "toolchain",
        "add",
        common::plugin("hostile").to_str().unwrap(),
        "--name",
        "hostile",
    ]);
    let err = l.fails(&[
        "package",
        "iris:1",
        "--toolchain",
        "hostile",
        "--base",
        &base,
        "--arg",
        "mode=escape",
    ]);
    assert!(
        err.contains("path '/opt/../../etc/cron.d/evil' is refused: it escapes the image root"),
        "{err}"
    );
    let err = l.fails(&[
        "package",
        "iris:1",
        "--toolchain",
        "hostile",
        "--base",
        &base,
        "--arg",
        "mode=root",
    ]);
    assert!(err.contains("user '0:0' is root"), "{err}");

    // A registry that serves a blob whose bytes do not match its digest:
    // corrupt the base's layer in the registry's own storage.
    let layer = {
        let m: Value = serde_json::from_slice(&registry.raw_manifest("base/python:3")).unwrap();
        m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let data = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, vec![0u8; len]).unwrap();
    let err = l.fails(&["package", "iris:1", "--base", &base]);
    assert!(
        err.contains(&format!("sha256:{layer}")) && err.contains("digest"),
        "{err}"
    );

    // No failure left a name behind: no local image, no tag.
    assert_eq!(images(), 0, "{:#}", l.json(&["images", "ls"]));
    let tags = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/models/iris", registry.addr))
        .output()
        .unwrap();
    assert!(!tags.status.success() || !String::from_utf8_lossy(&tags.stdout).contains("\"1\""));
    // Every failed packaging kept its log with the reason.
    for run in l.json(&["runs", "ls"]).as_array().unwrap() {
        if run["kind"] == "packaging" {
            assert_eq!(run["state"], "failed", "{run:#}");
            let log = std::fs::read_to_string(run["logPath"].as_str().unwrap()).unwrap();
            assert!(log.contains("failed"), "{log}");
        }
    }
}
