//! `legion toolchain new` as an outside author meets it: in an empty
//! folder outside the repository, the scaffolded crate passes its own
//! native test, builds for wasm32-wasip2 with nothing but its vendored
//! SDK, registers, plans, trains a tiny project and serves the model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, legion_bin, Legion, ECHO_PREDICT};
use serde_json::{json, Value};

/// Cargo, as the test runner was started with it.
fn cargo(dir: &Path, args: &[&str]) {
    let target = legion_bin()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("scaffold-test"))
        .unwrap();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        // A target folder of its own, kept between runs (the SDK's
        // dependencies compile once), apart from the suite's.
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wasm(name: &str) -> PathBuf {
    legion_bin()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("scaffold-test/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

#[test]
fn a_new_toolchain_builds_outside_the_repository_and_trains_and_serves() {
    let l = Legion::new();
    let outside = tempfile::tempdir().unwrap();
    assert!(!outside.path().starts_with(common::repo_root()));
    let crate_dir = outside.path().join("acme");
    let made = l.json(&[
        "toolchain",
        "new",
        "acme-trainer",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert_eq!(made["contract"], "legion:toolchain@0.2.0");
    // The vendored SDK is all there is: no path back into a checkout.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \"legion-sdk\""), "{manifest}");
    assert!(!crate_dir.join("legion-sdk/wit").is_symlink());

    cargo(&crate_dir, &["test", "--release"]);
    cargo(
        &crate_dir,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    let added = l.json(&["toolchain", "add", wasm("acme-trainer").to_str().unwrap()]);
    assert_eq!(added["name"], "acme-trainer", "{added}");
    assert_eq!(added["contract"], "legion:toolchain@0.2.0");

    // A tiny project: its train.py takes the plugin's --epochs and writes
    // a legion.python model echoing its first column.
    let project = outside.path().join("tiny");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("train.py"),
        format!(
            "import os, sys\nassert sys.argv[1:] == ['--epochs', '3'], sys.argv\n\
             d = os.path.join(os.environ['LEGION_OUTPUT_DIR'], 'model')\nos.makedirs(d)\n\
             open(os.path.join(d, 'predict.py'), 'w').write({ECHO_PREDICT:?})\n"
        ),
    )
    .unwrap();
    let src = project.to_str().unwrap();
    let request = outside.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"model": {"name": "tiny", "version": "1"}, "hyperParameters": {"epochs": "3"}}"#,
    )
    .unwrap();
    let plan = l.json(&[
        "toolchain",
        "plan",
        "acme-trainer",
        "--source",
        src,
        "--request",
        request.to_str().unwrap(),
    ]);
    assert_eq!(
        plan["steps"][0]["command"],
        json!(["python", "train.py"]),
        "{plan}"
    );
    assert_eq!(plan["steps"][0]["args"], json!(["--epochs", "3"]), "{plan}");
    // The declared parameter is typed: 0 is refused before the plugin runs.
    let err = l.fails(&[
        "train",
        src,
        "-t",
        "acme-trainer",
        "--name",
        "tiny",
        "-P",
        "epochs=0",
    ]);
    assert!(
        err.contains("-P epochs") && err.contains("from 1 to 10000"),
        "{err}"
    );
    let run = l.json(&[
        "train",
        src,
        "-t",
        "acme-trainer",
        "--name",
        "tiny",
        "-P",
        "epochs=3",
    ]);
    assert_eq!(run["state"], "succeeded", "{run:#}");

    // Served, it answers a prediction.
    let port = free_port();
    let mut server = l
        .cmd()
        .args(["serve", "tiny:1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Generous: a first start builds the model's environment.
    let deadline = Instant::now() + Duration::from_secs(600);
    while http
        .get(format!("{base}/v2/health/ready"))
        .send()
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < deadline,
            "the model server never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r: Value = http
        .post(format!("{base}/api/model/invoke"))
        .json(&json!({"columns": ["x"], "data": [[2.5], [4.0]]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r["prediction"], json!([[2.5], [4.0]]), "{r}");

    // The packager kind builds and registers the same way.
    let pkg_dir = outside.path().join("pack");
    l.ok(&[
        "toolchain",
        "new",
        "acme-packager",
        "--kind",
        "packager",
        "--dir",
        pkg_dir.to_str().unwrap(),
    ]);
    cargo(
        &pkg_dir,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    let added = l.json(&["toolchain", "add", wasm("acme-packager").to_str().unwrap()]);
    assert_eq!(
        added["interfaces"],
        json!(["packager", "server"]),
        "{added}"
    );
    // And a second `new` into a folder in use is refused.
    let err = l.fails(&[
        "toolchain",
        "new",
        "acme-packager",
        "--dir",
        pkg_dir.to_str().unwrap(),
    ]);
    assert!(err.contains("not empty"), "{err}");
}
