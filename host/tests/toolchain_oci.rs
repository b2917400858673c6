//! Toolchains published to and registered from a real registry (Debian's
//! `docker-registry`), in the wasm OCI layout; read back by skopeo, an
//! independent client.

mod common;

use std::process::Command;

use common::registry::Registry;
use common::{plugin, Legion};
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `legion -o json toolchain push FILE REF`: the manifest digest.
fn push(l: &Legion, file: &std::path::Path, reference: &str) -> String {
    let out = l.json(&["toolchain", "push", file.to_str().unwrap(), reference]);
    let digest = out["push"]["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{out:#}");
    digest
}

fn skopeo_raw(args: &[&str], reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(args)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is not installed: run scripts/setup.sh");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_pushed_toolchain_is_what_skopeo_reads_and_registers_by_tag_and_by_digest() {
    let reg = Registry::start();
    let l = Legion::new();
    let wasm = std::fs::read(plugin("python")).unwrap();
    let reference = format!("{}/toolchains/python:1", reg.addr);
    let digest = push(&l, &plugin("python"), &reference);

    // An independent client sees the wasm OCI layout.
    let raw = skopeo_raw(&["--raw"], &reference);
    assert_eq!(sha256(&reg.raw_manifest("toolchains/python:1")), digest);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], sha256(&wasm));
    assert_eq!(layers[0]["size"], wasm.len());
    assert_eq!(
        raw["annotations"]["org.legion-platform.toolchain.contract"],
        "legion:toolchain@0.1.0"
    );
    let config = skopeo_raw(&["--config", "--raw"], &reference);
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"][0], sha256(&wasm));
    let exports: Vec<&str> = config["component"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(exports, ["legion:toolchain/trainer@0.1.0"]);
    let imports = &config["component"]["imports"];
    assert!(
        imports
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:")),
        "{imports}"
    );

    // The same component pushed again is the same manifest: nothing moves.
    let again = l.json(&[
        "toolchain",
        "push",
        plugin("python").to_str().unwrap(),
        &reference,
    ]);
    assert_eq!(again["push"]["digest"], digest);
    assert_eq!(again["push"]["blobsPushed"], 0, "{again:#}");

    // By tag: resolved once, pinned; by digest: the same component.
    let other = Legion::new();
    let by_tag = other.json(&["toolchain", "add", &reference, "--name", "py-tag"]);
    assert_eq!(by_tag["digest"], sha256(&wasm));
    let pinned = format!("{}/toolchains/python@{digest}", reg.addr);
    assert_eq!(by_tag["origin"], pinned);
    assert_eq!(by_tag["info"]["name"], "python");
    assert_eq!(by_tag["interfaces"], serde_json::json!(["trainer"]));
    let by_digest = other.json(&["toolchain", "add", &pinned, "--name", "py-digest"]);
    assert_eq!(by_digest["digest"], sha256(&wasm));
    assert_eq!(by_digest["origin"], pinned);
    let shown = other.ok(&["toolchain", "show", "py-tag"]);
    assert!(shown.contains(&pinned), "{shown}");
}

#[test]
fn a_moved_tag_changes_nothing_until_the_toolchain_is_registered_again() {
    let reg = Registry::start();
    let l = Legion::new();
    let reference = format!("{}/toolchains/mine:stable", reg.addr);
    let noop = std::fs::read(plugin("noop")).unwrap();
    push(&l, &plugin("noop"), &reference);
    let row = l.json(&["toolchain", "add", &reference, "--name", "mine"]);
    assert_eq!(row["digest"], sha256(&noop));

    // The tag now names another component.
    let moved = push(&l, &plugin("python"), &reference);
    let shown = l.json(&["toolchain", "show", "mine"]);
    assert_eq!(shown["digest"], sha256(&noop), "the registration is pinned");

    // A training runs the pinned component: the no-op's one step.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("README"), "nothing to train\n").unwrap();
    let run = l.json(&[
        "train",
        src.path().to_str().unwrap(),
        "-t",
        "mine",
        "--name",
        "pinned",
        "--version",
        "1",
    ]);
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["toolchainDigest"], sha256(&noop));
    assert_eq!(run["plan"]["steps"][0]["name"], "noop", "{run:#}");

    // Registered again, the tag is resolved again.
    let again = l.json(&[
        "toolchain",
        "add",
        &reference,
        "--name",
        "mine",
        "--replace",
    ]);
    assert_eq!(
        again["digest"],
        sha256(&std::fs::read(plugin("python")).unwrap())
    );
    assert_eq!(
        again["origin"],
        format!("{}/toolchains/mine@{moved}", reg.addr)
    );
}

#[test]
fn a_tampered_component_in_the_registry_is_refused_and_nothing_is_registered() {
    let reg = Registry::start();
    let l = Legion::new();
    let reference = format!("{}/toolchains/noop:1", reg.addr);
    push(&l, &plugin("noop"), &reference);
    let noop = std::fs::read(plugin("noop")).unwrap();
    let hex = sha256(&noop)["sha256:".len()..].to_string();
    let blob = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let fresh = Legion::new();
    let before = fresh.json(&["toolchain", "ls"]);
    let err = fresh.fails(&["toolchain", "add", &reference, "--name", "tampered"]);
    assert!(err.contains(&format!("sha256:{hex}")), "{err}");
    assert!(err.contains("toolchains/noop@sha256:"), "{err}");
    assert_eq!(
        fresh.json(&["toolchain", "ls"]),
        before,
        "nothing registered"
    );
}

#[test]
fn references_that_are_not_toolchains_are_refused_naming_what_is_wrong() {
    let reg = Registry::start();
    let l = Legion::new();
    // An ordinary image: not the wasm layout.
    let image = reg.copy_in(
        &format!("oci:{}", common::registry::base_layout()),
        "base/python:3",
    );
    let err = l.fails(&["toolchain", "add", &image]);
    assert!(err.contains("application/vnd.wasm.config.v0+json"), "{err}");
    // A tag the registry does not have.
    let missing = format!("{}/toolchains/none:1", reg.addr);
    let err = l.fails(&["toolchain", "add", &missing]);
    assert!(err.contains(&missing), "{err}");
    // A digest that is not the tag's manifest.
    push(
        &l,
        &plugin("noop"),
        &format!("{}/toolchains/noop:1", reg.addr),
    );
    let wrong = format!("{}/toolchains/noop@sha256:{}", reg.addr, "0".repeat(64));
    let err = l.fails(&["toolchain", "add", &wrong]);
    assert!(err.contains("toolchains/noop"), "{err}");
    // Neither a file nor a reference with a registry.
    let err = l.fails(&["toolchain", "add", "toolchains/noop:1"]);
    assert!(err.contains("toolchains/noop:1"), "{err}");
    // Pushing to a digest, or something that is no component.
    let err = l.fails(&[
        "toolchain",
        "push",
        plugin("noop").to_str().unwrap(),
        &format!("{}/toolchains/noop@sha256:{}", reg.addr, "0".repeat(64)),
    ]);
    assert!(err.contains("push to a tag"), "{err}");
    let (_d, text) = common::temp_file("x.wasm", b"not wasm");
    let err = l.fails(&[
        "toolchain",
        "push",
        text.to_str().unwrap(),
        &format!("{}/toolchains/x:1", reg.addr),
    ]);
    assert!(err.contains("x.wasm"), "{err}");
    let list = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/toolchains/x", reg.addr))
        .output()
        .unwrap();
    assert!(!list.status.success() || !String::from_utf8_lossy(&list.stdout).contains("\"1\""));
}
