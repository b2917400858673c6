//! The platform image (`scripts/platform-image.sh`), made by Legion's own
//! image builder (`legion images build`), pushed to a real registry and run
//! under podman as the operator's and the Jobs' pods run it: read-only root,
//! a writable /tmp, its own non-root user.

mod common;

use std::process::Command;

use common::podman::{available, podman};
use common::registry::Registry;
use common::{legion_bin, repo_root};
use serde_json::Value;

fn build(image: &str, home: &std::path::Path) -> Value {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/platform-image.sh"))
        .args(["--push", image])
        // scripts/test.sh built everything first; no test runs cargo.
        .env("LEGION_PLATFORM_PREBUILT", "1")
        .env("LEGION_HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "platform-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `podman run` of the image as a hardened pod runs it.
fn run(image: &str, entrypoint: Option<&str>, args: &[&str]) -> String {
    let mut cmd = podman();
    cmd.args([
        "run",
        "--rm",
        "--tls-verify=false",
        "--read-only",
        "--tmpfs",
        "/tmp",
    ])
    // This machine's limits (DESIGN.md): runc cannot raise them.
    .args([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    if let Some(e) = entrypoint {
        cmd.args(["--entrypoint", e]);
    }
    let out = cmd.arg(image).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman run {image} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_platform_image_runs_legion_as_a_non_root_user_with_the_builtin_toolchains() {
    if !available("the_platform_image_runs_legion") {
        return;
    }
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let image = format!("{}/legion/platform:test", registry.addr);
    let made = build(&image, home.path());
    let pinned = made["reference"].as_str().unwrap().to_string();
    assert!(pinned.contains("@sha256:"), "{made}");
    // Reproducible: the same inputs give the same digest.
    assert_eq!(build(&image, home.path())["digest"], made["digest"]);

    let version = run(&pinned, None, &["--version"]);
    assert_eq!(
        version.trim(),
        format!("legion {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        run(&pinned, Some("id"), &["-u"]).trim(),
        "1000",
        "never root"
    );

    // The built-ins are the ones this build made: same digests as here.
    let listed: Value =
        serde_json::from_str(&run(&pinned, None, &["-o", "json", "toolchain", "ls"])).unwrap();
    let here = Command::new(legion_bin())
        .args(["-o", "json", "toolchain", "ls"])
        .env("LEGION_HOME", home.path().join("here"))
        .env("LEGION_PLUGIN_DIR", common::plugin_dir())
        .output()
        .unwrap();
    let here: Value = serde_json::from_slice(&here.stdout).unwrap();
    for name in ["python", "mlflow", "docker-rest"] {
        let digest = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["digest"].clone())
        };
        assert!(
            digest(&listed).is_some(),
            "{name} missing from the image: {listed}"
        );
        assert_eq!(digest(&listed), digest(&here), "{name}");
    }

    // The operator's CRDs are the chart's.
    let crds = run(&pinned, None, &["operator", "crds"]);
    let chart =
        std::fs::read_to_string(repo_root().join("helms/legion/crds/legion-platform.org.yaml"))
            .unwrap();
    assert_eq!(crds, chart);

    // What the pods' phases need besides legion: git for sources, pip for
    // dependency layers, the static server for packaged images.
    assert!(run(&pinned, Some("git"), &["--version"]).starts_with("git version"));
    assert!(run(&pinned, Some("python3"), &["-m", "pip", "--version"]).starts_with("pip "));
    assert!(run(&pinned, Some("legion-serve"), &["--help"]).contains("legion-serve"));
    let stage = std::path::PathBuf::from(
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "/var/cache/legion/target".into()),
    )
    .join("platform-stage/bin/legion");
    let file = Command::new("file").arg(&stage).output().unwrap();
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(file.contains("static"), "{file}");
}
