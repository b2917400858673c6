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
        "legion:toolchain@0.2.0"
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
    assert_eq!(
        exports,
        [
            "legion:toolchain/trainer@0.2.0",
            "legion:toolchain/batch@0.2.0"
        ]
    );
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
    assert_eq!(
        by_tag["interfaces"],
        serde_json::json!(["trainer", "batch"])
    );
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

/// wkg (wasm-pkg-tools), built by scripts/setup.sh.
fn wkg() -> std::path::PathBuf {
    let root = std::env::var("WKG_ROOT").unwrap_or_else(|_| "/var/cache/legion/wkg".into());
    let bin = std::path::Path::new(&root).join("bin/wkg");
    assert!(
        bin.is_file(),
        "wkg is missing at {}: run scripts/setup.sh",
        bin.display()
    );
    bin
}

#[test]
fn wkg_pulls_the_same_bytes_that_were_pushed() {
    let reg = Registry::start();
    let l = Legion::new();
    let reference = format!("{}/toolchains/noop:1", reg.addr);
    push(&l, &plugin("noop"), &reference);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("pulled.wasm");
    let run = Command::new(wkg())
        .args(["oci", "pull", "--insecure", &reg.addr, &reference, "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "wkg oci pull: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(plugin("noop")).unwrap()
    );
}

#[test]
fn with_a_trust_policy_only_toolchains_signed_by_a_trusted_key_are_registered() {
    let reg = Registry::start();
    let publisher = Legion::new();
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let k = publisher.json(&[
            "toolchain",
            "keygen",
            keys.path().join(name).to_str().unwrap(),
        ]);
        k["keyId"].as_str().unwrap().to_string()
    };
    let (alice, bob) = (keygen("alice"), keygen("bob"));
    let key = |f: &str| keys.path().join(f).to_str().unwrap().to_string();
    let signed = format!("{}/toolchains/noop:1", reg.addr);
    let digest = push(&publisher, &plugin("noop"), &signed);
    let s = publisher.json(&["toolchain", "sign", &signed, "--key", &key("alice.key")]);
    assert_eq!(s["subject"], digest);
    assert_eq!(s["keyId"], alice);

    // The signature is a referrer, listed under the tag schema's tag.
    let index = skopeo_raw(
        &["--raw"],
        &format!("{}/toolchains/noop:{}", reg.addr, digest.replace(':', "-")),
    );
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.legion.toolchain.signature.v1+json"
    );
    let sig = skopeo_raw(
        &["--raw"],
        &format!(
            "{}/toolchains/noop@{}",
            reg.addr,
            s["signature"].as_str().unwrap()
        ),
    );
    assert_eq!(sig["subject"]["digest"], digest);

    // verify: with the right key, and not with another.
    let v = publisher.json(&["toolchain", "verify", &signed, "--key", &key("alice.pub")]);
    assert_eq!(v["keyId"], alice);
    let err = publisher.fails(&["toolchain", "verify", &signed, "--key", &key("bob.pub")]);
    assert!(
        err.contains(&format!("{alice} (not trusted)")) && err.contains(&bob),
        "{err}"
    );

    // The admin trusts alice.
    let admin = Legion::new();
    admin.ok(&["toolchain", "trust", "add", &key("alice.pub")]);
    assert_eq!(
        admin.json(&["toolchain", "trust", "ls"])["keyIds"],
        serde_json::json!([alice])
    );
    let row = admin.json(&["toolchain", "add", &signed, "--name", "signed"]);
    assert_eq!(
        row["origin"],
        format!("{}/toolchains/noop@{digest}", reg.addr)
    );

    // Unsigned: refused, naming the trusted keys.
    let unsigned = format!("{}/toolchains/python:1", reg.addr);
    push(&publisher, &plugin("python"), &unsigned);
    let err = admin.fails(&["toolchain", "add", &unsigned, "--name", "unsigned"]);
    assert!(
        err.contains("signatures found: none") && err.contains(&alice),
        "{err}"
    );

    // Signed by a key the admin does not trust.
    let bobs = format!("{}/toolchains/hello:1", reg.addr);
    push(&publisher, &plugin("hello-toolchain"), &bobs);
    publisher.ok(&["toolchain", "sign", &bobs, "--key", &key("bob.key")]);
    let err = admin.fails(&["toolchain", "add", &bobs, "--name", "bobs"]);
    assert!(err.contains(&format!("{bob} (not trusted)")), "{err}");

    // The signed tag moved to another component: its signature does not
    // carry over.
    push(&publisher, &plugin("python"), &signed);
    let err = admin.fails(&["toolchain", "add", &signed, "--name", "moved"]);
    assert!(err.contains("signatures found: none"), "{err}");

    // A signature whose bytes were altered in the registry is no signature.
    let tampered = format!("{}/toolchains/tampered:1", reg.addr);
    push(&publisher, &plugin("hello-toolchain"), &tampered);
    let t = publisher.json(&["toolchain", "sign", &tampered, "--key", &key("alice.key")]);
    let sig = skopeo_raw(
        &["--raw"],
        &format!(
            "{}/toolchains/tampered@{}",
            reg.addr,
            t["signature"].as_str().unwrap()
        ),
    );
    let layer = sig["layers"][0]["digest"].as_str().unwrap();
    let hex = &layer["sha256:".len()..];
    let blob = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let text = std::fs::read_to_string(&blob).unwrap();
    let at = text.find("\"signature\":\"").unwrap() + "\"signature\":\"".len();
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&blob, &bytes).unwrap();
    let err = admin.fails(&["toolchain", "add", &tampered, "--name", "tampered"]);
    assert!(err.contains("unreadable"), "{err}");

    // An unsigned file is refused while the policy is set (a signed one
    // registers: tests/cli_toolchain.rs).
    let err = admin.fails(&[
        "toolchain",
        "add",
        plugin("noop").to_str().unwrap(),
        "--name",
        "file",
    ]);
    assert!(
        err.contains("no signature by a trusted key") && err.contains(&alice),
        "{err}"
    );
    let names: Vec<String> = admin
        .json(&["toolchain", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"signed".to_string()));
    for refused in ["unsigned", "bobs", "moved", "tampered", "file"] {
        assert!(!names.contains(&refused.to_string()), "{names:?}");
    }
    // A second signer adds to the referrers index; the first stays listed.
    publisher.ok(&["toolchain", "sign", &unsigned, "--key", &key("bob.key")]);
    let both = publisher.json(&["toolchain", "sign", &unsigned, "--key", &key("alice.key")]);
    let index = skopeo_raw(
        &["--raw"],
        &format!(
            "{}/toolchains/python:{}",
            reg.addr,
            both["subject"].as_str().unwrap().replace(':', "-")
        ),
    );
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    for k in ["alice.pub", "bob.pub"] {
        publisher.ok(&["toolchain", "verify", &unsigned, "--key", &key(k)]);
    }

    // Without the policy, a file registers again.
    admin.ok(&["toolchain", "trust", "rm", &alice]);
    admin.ok(&[
        "toolchain",
        "add",
        plugin("noop").to_str().unwrap(),
        "--name",
        "file",
    ]);
}
