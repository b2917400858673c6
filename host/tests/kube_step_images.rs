//! Step images for cluster runs: a plan's Python environment baked onto
//! the step's base by the packaging builder, pushed to a real registry,
//! reused by hash, and run with podman.

mod common;

use common::podman;
use common::registry::Registry;
use legion::exec::kube::step_image::step_image;
use legion::exec::RunLog;
use legion::home::Home;
use legion::plan::PythonEnvironment;
use serde_json::Value;

#[test]
fn a_python_environment_becomes_a_step_image_once_and_runs() {
    let registry = Registry::start();
    let base = registry.python_base();
    let home = tempfile::tempdir().unwrap();
    let home = Home::new(home.path());
    let log = RunLog::open(&home.root().join("step-image.log")).unwrap();
    // numpy (wheels), and wheel (a console script: bin/ must work in the image).
    let env = PythonEnvironment {
        python_version: None,
        requirements: vec!["numpy".into(), "wheel".into()],
    };
    let repository = format!("{}/legion/steps", registry.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt
        .block_on(step_image(&home, &base, &env, &repository, true, &log))
        .unwrap();
    assert!(!first.reused);
    assert!(
        first
            .reference
            .starts_with(&format!("{repository}@sha256:")),
        "{}",
        first.reference
    );
    assert!(
        first.tag.starts_with(&format!("{repository}:step-")),
        "{}",
        first.tag
    );
    // Unchanged environment: found by its hash, nothing built.
    let again = rt
        .block_on(step_image(&home, &base, &env, &repository, true, &log))
        .unwrap();
    assert!(again.reused);
    assert_eq!(again.reference, first.reference);
    let log_text = std::fs::read_to_string(home.root().join("step-image.log")).unwrap();
    assert_eq!(
        log_text.matches("building step image").count(),
        1,
        "{log_text}"
    );
    // Another environment is another image.
    let other = PythonEnvironment {
        python_version: None,
        requirements: vec!["wheel".into()],
    };
    let third = rt
        .block_on(step_image(&home, &base, &other, &repository, true, &log))
        .unwrap();
    assert_ne!(third.reference, first.reference);

    let config: Value = serde_json::from_str(&String::from_utf8_lossy(
        &std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--config"])
            .arg(format!("docker://{}", first.reference))
            .output()
            .unwrap()
            .stdout,
    ))
    .unwrap();
    let env_lines: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env_lines
            .iter()
            .any(|l| l.starts_with("PATH=/opt/legion/python/bin:")),
        "{env_lines:?}"
    );
    assert!(env_lines.contains(&"PYTHONPATH=/opt/legion/python"));

    if !podman::available("a_python_environment_becomes_a_step_image_once_and_runs") {
        return;
    }
    let out = podman::podman()
        .args([
            "run",
            "--rm",
            "--read-only",
            "--tls-verify=false",
            "--network=host",
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(&first.reference)
        .args([
            "sh",
            "-c",
            "python3 -c 'import numpy; print(numpy.__version__)' && wheel version",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().count() >= 2 && text.contains("wheel"),
        "{text}"
    );
    let _ = podman::podman()
        .args(["rmi", "-f", &first.reference])
        .output();
}
