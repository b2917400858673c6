//! `legion step fetch|collect`: the phases a Kubernetes pod runs, here run
//! as the pod would (a spec in `LEGION_STEP_SPEC`, a workspace folder, a
//! termination-message file), against a real registry and git.

mod common;

use common::registry::Registry;
use common::{git, write_model, Legion};
use serde_json::{json, Value};

fn digest_of(l: &Legion, toolchain: &str) -> String {
    l.json(&["toolchain", "show", toolchain])["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn step(l: &Legion, spec: &Value, args: &[&str]) -> std::process::Output {
    l.cmd()
        .arg("step")
        .args(args)
        .env("LEGION_STEP_SPEC", spec.to_string())
        .output()
        .unwrap()
}

#[test]
fn fetch_at_the_recorded_commit_then_collect_pushes_and_reports_the_digest() {
    let l = Legion::new();
    let registry = Registry::start();
    // A git source whose branch moved on after the run was planned.
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("train.py"), "print('one')\n").unwrap();
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "one"]);
    let recorded = git(repo.path(), &["rev-parse", "HEAD"]);
    std::fs::write(repo.path().join("train.py"), "print('two')\n").unwrap();
    git(repo.path(), &["commit", "-qam", "two"]);

    let spec = json!({
        "runId": "iris-0001",
        "toolchain": {"name": "python", "digest": digest_of(&l, "python")},
        "request": {
            "model": {"name": "stepped", "version": "3"},
            "source": {"uri": format!("file://{}", repo.path().display()), "commit": recorded},
        },
        "push": format!("{}/models/stepped", registry.addr),
    });
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap();
    let out = step(&l, &spec, &["fetch", "--workspace", w]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("source/train.py")).unwrap(),
        "print('one')\n",
        "the pod trains the commit the run recorded, not the branch's head"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&recorded));

    write_model(ws.path());
    let term = ws.path().join("termination-log");
    let out = step(
        &l,
        &spec,
        &[
            "collect",
            "--workspace",
            w,
            "--termination-log",
            term.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reported: Value = serde_json::from_slice(&std::fs::read(&term).unwrap()).unwrap();
    let digest = reported["modelDigest"].as_str().unwrap();
    // The registry holds exactly that manifest under the model's version.
    let raw = registry.raw_manifest("models/stepped:3");
    use sha2::Digest as _;
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)))
    );
    assert_eq!(
        reported["pushedRef"],
        format!("{}/models/stepped:3@{digest}", registry.addr)
    );
    assert_eq!(reported["modelRef"], "stepped:3");
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.legion.model.v1");
}

#[test]
fn a_pod_refuses_a_toolchain_other_than_the_pinned_one_and_bad_specs() {
    let l = Legion::new();
    let ws = tempfile::tempdir().unwrap();
    write_model(ws.path());
    let w = ws.path().to_str().unwrap();
    let pinned = format!("sha256:{}", "0".repeat(64));
    let spec = json!({
        "runId": "r",
        "toolchain": {"name": "python", "digest": pinned},
        "request": {"model": {"name": "m", "version": "1"}, "source": {"uri": w}},
    });
    let term = ws.path().join("term");
    let out = step(
        &l,
        &spec,
        &[
            "collect",
            "--workspace",
            w,
            "--termination-log",
            term.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&pinned) && err.contains(&digest_of(&l, "python")),
        "{err}"
    );
    assert!(!term.exists(), "a refused collect reports nothing");

    let bad = json!({"runId": "r", "toolchain": {"name": "python", "digest": pinned}, "request": {"modle": {}}});
    let out = step(&l, &bad, &["fetch", "--workspace", w]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("LEGION_STEP_SPEC") && err.contains("modle"),
        "{err}"
    );
    let out = l
        .cmd()
        .args(["step", "fetch", "--workspace", w])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no step spec"));
}

#[test]
fn a_local_folder_travels_as_an_oci_source_artifact() {
    let l = Legion::new();
    let registry = Registry::start();
    let example = std::path::PathBuf::from(common::example("python-iris"));
    let layout = tempfile::tempdir().unwrap();
    let reference =
        oci_client::Reference::try_from(format!("{}/legion/sources:iris", registry.addr)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pinned = rt
        .block_on(legion::oci::source::push_source(
            &example,
            &legion::oci::layout::Layout::open(layout.path()).unwrap(),
            &reference,
        ))
        .unwrap();
    assert!(
        pinned.starts_with(&format!("{}/legion/sources@sha256:", registry.addr)),
        "{pinned}"
    );
    let manifest: Value =
        serde_json::from_slice(&registry.raw_manifest("legion/sources:iris")).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.legion.source.v1");

    // A pod fetches it by digest.
    let spec = json!({
        "runId": "iris-0002",
        "toolchain": {"name": "python", "digest": digest_of(&l, "python")},
        "request": {"model": {"name": "iris", "version": "1"}, "source": {"uri": format!("oci://{pinned}")}},
    });
    let ws = tempfile::tempdir().unwrap();
    let out = step(
        &l,
        &spec,
        &["fetch", "--workspace", ws.path().to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["train.py", "requirements.txt"] {
        assert_eq!(
            std::fs::read(ws.path().join("source").join(file)).unwrap(),
            std::fs::read(example.join(file)).unwrap(),
            "{file}"
        );
    }

    // And a training can start from it anywhere.
    let run = common::train(
        &l,
        &[
            &format!("oci://{pinned}"),
            "--toolchain",
            "python",
            "--name",
            "fromoci",
        ],
    );
    assert_eq!(run["request"]["source"]["uri"], format!("oci://{pinned}"));

    // Something that is not a source artifact is refused, naming it.
    l.ok(&[
        "train",
        example.to_str().unwrap(),
        "--toolchain",
        "python",
        "--name",
        "m",
        "--push",
        &format!("{}/models/m", registry.addr),
    ]);
    let not_source = format!("oci://{}/models/m:1", registry.addr);
    let out = l.run(&["train", &not_source, "--toolchain", "python", "--name", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a Legion source artifact"),
        "{err}"
    );
}
