//! `legion images build`: files onto a base as one deterministic layer,
//! read back by skopeo (an independent OCI reader).

mod common;

use std::process::Command;

use common::registry::base_layout;
use common::Legion;
use serde_json::Value;

fn skopeo_config(reference: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--config", reference])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn files_go_onto_a_base_with_the_settings_given_and_the_same_digest_each_time() {
    let l = Legion::new();
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("bin")).unwrap();
    std::fs::write(files.path().join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        files.path().join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(files.path().join("notes.txt"), "notes\n").unwrap();
    let base = format!("oci:{}", base_layout());
    let add_dir = format!("{}=/opt/app", files.path().display());
    let add_file = format!(
        "{}=/etc/app/notes.txt",
        files.path().join("notes.txt").display()
    );
    let build = |tag: &str| {
        l.json(&[
            "images",
            "build",
            "--base",
            &base,
            "--add",
            &add_dir,
            "--add",
            &add_file,
            "--entrypoint",
            "/opt/app/bin/tool",
            "--cmd=--help",
            "--env",
            "APP_MODE=test",
            "--label",
            "org.example.role=tool",
            "--user",
            "1000:1000",
            "--workdir",
            "/tmp",
            "--tag",
            tag,
        ])
    };
    let a = build("tool:1");
    let b = build("tool:2");
    assert_eq!(a["digest"], b["digest"], "same inputs, same image");
    assert_eq!(a["files"], 3);
    let reference = a["reference"].as_str().unwrap();
    assert!(reference.ends_with(":tool:1"), "{reference}");
    let config = skopeo_config(reference);
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/opt/app/bin/tool"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--help"]));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/tmp");
    assert_eq!(c["Labels"]["org.example.role"], "tool");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("APP_MODE=test")));
    // The base's layers and one more.
    let base_config = skopeo_config(&base);
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        base_config["rootfs"]["diff_ids"].as_array().unwrap().len() + 1
    );
}

#[test]
fn bad_input_is_refused_naming_it_and_builds_nothing() {
    let l = Legion::new();
    let base = format!("oci:{}", base_layout());
    let err = l.fails(&[
        "images",
        "build",
        "--base",
        &base,
        "--add",
        "/no/such/file=/x",
        "--tag",
        "t:1",
    ]);
    assert!(err.contains("/no/such/file"), "{err}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let add = format!("{}=relative/path", file.path().display());
    let err = l.fails(&[
        "images", "build", "--base", &base, "--add", &add, "--tag", "t:1",
    ]);
    assert!(
        err.contains("relative/path") && err.contains("not absolute"),
        "{err}"
    );
    let add = format!("{}=/x", file.path().display());
    let err = l.fails(&["images", "build", "--base", &base, "--add", &add]);
    assert!(err.contains("--tag") || err.contains("--push"), "{err}");
    let err = l.fails(&[
        "images",
        "build",
        "--base",
        "oci:/no/layout:x",
        "--add",
        &add,
        "--tag",
        "t:1",
    ]);
    assert!(err.contains("/no/layout"), "{err}");
    assert_eq!(l.json(&["images", "ls"]), serde_json::json!([]));
}
