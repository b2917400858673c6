//! `legion toolchain …` end to end, with real components built from the repo.

mod common;

use common::{plugin, temp_file, Legion};

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn fresh_data_dir_registers_the_builtins_on_first_use() {
    let l = Legion::new();
    let list = l.json(&["toolchain", "ls"]);
    assert_eq!(names(&list), ["docker-rest", "mlflow", "python"]);
    for t in list.as_array().unwrap() {
        assert_eq!(t["builtin"], true);
        assert_eq!(t["contract"], "legion:toolchain@0.2.0");
        assert!(t["digest"].as_str().unwrap().starts_with("sha256:"));
    }
    let docker = &list[0];
    assert_eq!(
        docker["interfaces"],
        serde_json::json!(["packager", "server"])
    );
    assert_eq!(list[1]["interfaces"], serde_json::json!(["trainer"]));
}

#[test]
fn builtin_is_registered_on_first_use_by_name() {
    let l = Legion::new();
    let shown = l.json(&["toolchain", "show", "python"]);
    assert_eq!(shown["name"], "python");
    assert_eq!(shown["info"]["name"], "python");
}

#[test]
fn add_prints_name_digest_interfaces_and_contract() {
    let l = Legion::new();
    let wasm = plugin("hello-toolchain");
    let bytes = std::fs::read(&wasm).unwrap();
    let digest = format!("sha256:{}", sha256_hex(&bytes));

    let out = l.ok(&[
        "toolchain",
        "add",
        wasm.to_str().unwrap(),
        "--config",
        "requirements=numpy",
    ]);
    assert!(out.contains("name:") && out.contains("hello"), "{out}");
    assert!(out.contains(&digest), "{out}");
    assert!(
        out.contains("trainer") && out.contains("legion:toolchain@0.2.0"),
        "{out}"
    );

    let shown = l.json(&["toolchain", "show", "hello"]);
    assert_eq!(shown["digest"], digest.as_str());
    assert_eq!(shown["config"]["requirements"], "numpy");
    assert_eq!(shown["info"]["defaultImage"], "python:3.11-slim");
    assert_eq!(shown["builtin"], false);
    // The wasm is stored by digest; its compiled code is cached.
    let files = l.files();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with(&format!("{}.wasm", &digest[7..]))),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("cache/components/") && f.ends_with(".cwasm")),
        "{files:?}"
    );
}

#[test]
fn add_under_a_taken_name_needs_replace() {
    let l = Legion::new();
    let wasm = plugin("hello-toolchain");
    l.ok(&["toolchain", "add", wasm.to_str().unwrap()]);
    let err = l.fails(&[
        "toolchain",
        "add",
        plugin("hostile").to_str().unwrap(),
        "--name",
        "hello",
    ]);
    assert!(
        err.contains("'hello' is already registered") && err.contains("--replace"),
        "{err}"
    );
    let shown = l.json(&["toolchain", "show", "hello"]);
    assert_eq!(
        shown["info"]["name"], "hello",
        "the first registration must be untouched"
    );

    l.ok(&[
        "toolchain",
        "add",
        plugin("hostile").to_str().unwrap(),
        "--name",
        "hello",
        "--replace",
    ]);
    let shown = l.json(&["toolchain", "show", "hello"]);
    assert_eq!(shown["info"]["name"], "hostile");
}

#[test]
fn rm_removes_the_toolchain_and_its_files() {
    let l = Legion::new();
    let wasm = plugin("hello-toolchain");
    l.ok(&["toolchain", "add", wasm.to_str().unwrap()]);
    let out = l.ok(&["toolchain", "rm", "hello"]);
    assert!(out.contains("removed toolchain 'hello'"), "{out}");
    let err = l.fails(&["toolchain", "show", "hello"]);
    assert!(err.contains("unknown toolchain 'hello'"), "{err}");
    assert!(
        !l.files()
            .iter()
            .any(|f| f.ends_with(".wasm") || f.ends_with(".cwasm")),
        "{:?}",
        l.files()
    );
}

#[test]
fn plan_prints_the_plan_as_json_with_config_and_hyper_parameters() {
    let l = Legion::new();
    l.ok(&[
        "toolchain",
        "add",
        plugin("hello-toolchain").to_str().unwrap(),
        "--config",
        "requirements=numpy,pandas",
    ]);
    let (src, _) = temp_file("train.py", b"print('hi')\n");
    let (_req_dir, req) = temp_file(
        "req.json",
        br#"{"model": {"name": "m", "version": "1"}, "hyperParameters": {"alpha": "0.5"}, "resources": {"cpuMillis": 500}}"#,
    );
    let plan = l.json(&[
        "toolchain",
        "plan",
        "hello",
        "--request",
        req.to_str().unwrap(),
        "--source",
        src.path().to_str().unwrap(),
    ]);
    let step = &plan["steps"][0];
    assert_eq!(step["name"], "train");
    assert_eq!(step["command"], serde_json::json!(["python", "train.py"]));
    assert_eq!(
        step["args"],
        serde_json::json!(["--greeting", "hello", "--alpha", "0.5"])
    );
    assert_eq!(step["resources"]["cpuMillis"], 500);
    assert_eq!(
        plan["python"]["requirements"],
        serde_json::json!(["numpy", "pandas"])
    );
}

#[test]
fn plan_sees_the_source_read_only_and_reports_plugin_errors() {
    let l = Legion::new();
    l.ok(&[
        "toolchain",
        "add",
        plugin("hello-toolchain").to_str().unwrap(),
    ]);
    let empty = tempfile::tempdir().unwrap();
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}}"#);
    let err = l.fails(&[
        "toolchain",
        "plan",
        "hello",
        "--request",
        req.to_str().unwrap(),
        "--source",
        empty.path().to_str().unwrap(),
    ]);
    assert!(err.contains("toolchain 'hello' plan-training failed: invalid request: entrypoint: train.py is not a file"), "{err}");
}

#[test]
fn plan_makes_the_checks_train_makes_telling_toolchain_faults_from_admin_rules() {
    let l = Legion::new();
    l.ok(&["toolchain", "add", plugin("hostile").to_str().unwrap()]);
    let src = tempfile::tempdir().unwrap();
    let plan = |entrypoint: &str| {
        let (_d, req) = temp_file(
            "req.json",
            format!(
                r#"{{"model": {{"name": "m", "version": "1"}}, "entrypoint": "{entrypoint}"}}"#
            )
            .as_bytes(),
        );
        l.cmd()
            .args([
                "toolchain",
                "plan",
                "hostile",
                "--request",
                req.to_str().unwrap(),
                "--source",
            ])
            .arg(src.path())
            .output()
            .unwrap()
    };
    // A step without a command: the toolchain's fault, said so; the plan
    // is still printed for its author to read.
    let out = plan("empty-command");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("returned a plan Legion cannot run")
            && stderr.contains("steps[0] 'train': the command is empty")
            && !stderr.contains("policy"),
        "{stderr}"
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["steps"][0]["name"], "train");
    // A valid plan passes; the admin's rules apply to it as `train` applies them.
    assert!(plan("echo").status.success());
    std::fs::write(
        l.home.path().join("policy.json"),
        r#"{"allowedImages": ["registry.local/*"]}"#,
    )
    .unwrap();
    let out = plan("echo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plan refused by policy")
            && stderr.contains("image 'img' is not in the allowed images"),
        "{stderr}"
    );
}

#[test]
fn collect_refuses_a_model_the_server_could_not_load() {
    let l = Legion::new();
    l.ok(&["toolchain", "add", plugin("noop").to_str().unwrap()]);
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}}"#);
    let output = tempfile::tempdir().unwrap();
    std::fs::create_dir(output.path().join("model")).unwrap();
    let collect = || {
        l.cmd()
            .args([
                "toolchain",
                "plan",
                "noop",
                "--call",
                "collect",
                "--request",
            ])
            .arg(&req)
            .arg("--output-dir")
            .arg(output.path())
            .output()
            .unwrap()
    };
    // A legion.python model without its predict.py.
    let out = collect();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("toolchain 'noop'")
            && stderr.contains("cannot load")
            && stderr.contains("needs predict.py"),
        "{stderr}"
    );
    std::fs::write(output.path().join("model/predict.py"), "").unwrap();
    assert!(collect().status.success());
}

#[test]
fn plan_logs_are_tagged_with_the_toolchain() {
    let l = Legion::new();
    l.ok(&[
        "toolchain",
        "add",
        plugin("hostile").to_str().unwrap(),
        "--config",
        "greeting=hi",
    ]);
    let src = tempfile::tempdir().unwrap();
    let (_d, req) = temp_file(
        "req.json",
        br#"{"model": {"name": "m", "version": "1"}, "entrypoint": "echo"}"#,
    );
    let out = l
        .cmd()
        .args([
            "toolchain",
            "plan",
            "hostile",
            "--request",
            req.to_str().unwrap(),
            "--source",
        ])
        .arg(src.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("echo called") && stderr.contains("toolchain=\"hostile\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("stdout from echo") && stderr.contains("stderr from echo"),
        "{stderr}"
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["steps"][0]["args"][0], "hi",
        "config reached the plugin"
    );
}

#[test]
fn packager_plans_serving_with_the_sdk_default() {
    let l = Legion::new();
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}, "image": "reg/m@sha256:ab", "port": 9000, "minReplicas": 1, "maxReplicas": 2}"#);
    let plan = l.json(&[
        "toolchain",
        "plan",
        "docker-rest",
        "--call",
        "serving",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert_eq!(plan["image"], "reg/m@sha256:ab");
    assert_eq!(plan["port"], 9000);
    assert_eq!(plan["health"]["readinessPath"], "/v2/health/ready");
    assert_eq!(plan["maxReplicas"], 2);
}

#[test]
fn calling_an_interface_the_toolchain_does_not_export_is_an_error() {
    let l = Legion::new();
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}}"#);
    let err = l.fails(&[
        "toolchain",
        "plan",
        "python",
        "--call",
        "serving",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert!(
        err.contains("toolchain 'python' does not export `server`"),
        "{err}"
    );
}

// ---- bad input: clear error, non-zero exit, nothing written ----

/// Runs a failing `add` and checks the store is exactly as before.
fn add_fails_cleanly(l: &Legion, args: &[&str]) -> String {
    l.ok(&["toolchain", "ls"]);
    let before_files = l.files();
    let before = l.json(&["toolchain", "ls"]);
    let mut all = vec!["toolchain", "add"];
    all.extend_from_slice(args);
    let err = l.fails(&all);
    assert_eq!(l.files(), before_files, "a failed add must write no file");
    assert_eq!(
        l.json(&["toolchain", "ls"]),
        before,
        "a failed add must register nothing"
    );
    err
}

#[test]
fn non_wasm_file_is_refused() {
    let l = Legion::new();
    let (_d, path) = temp_file("model.wasm", b"#!/bin/sh\necho not wasm\n");
    let err = add_fails_cleanly(&l, &[path.to_str().unwrap()]);
    assert!(
        err.contains("model.wasm is not a WebAssembly file"),
        "{err}"
    );
}

#[test]
fn core_module_is_refused() {
    let l = Legion::new();
    // The smallest valid core module: magic, version 1, layer 0.
    let (_d, path) = temp_file("core.wasm", b"\0asm\x01\0\0\0");
    let err = add_fails_cleanly(&l, &[path.to_str().unwrap()]);
    assert!(
        err.contains("core.wasm is a core WebAssembly module, not a component")
            && err.contains("wasm32-wasip2"),
        "{err}"
    );
}

#[test]
fn component_exporting_no_interface_is_refused() {
    let l = Legion::new();
    // The smallest valid component: magic, version 0xd, layer 1; it exports nothing.
    let (_d, path) = temp_file("empty.wasm", b"\0asm\x0d\0\x01\0");
    let err = add_fails_cleanly(&l, &[path.to_str().unwrap()]);
    assert!(
        err.contains("toolchain 'empty' exports none of the legion:toolchain interfaces")
            && err.contains("exports nothing")
            && err.contains("export_toolchain!")
            && err.contains("crate-type = [\"cdylib\"]"),
        "{err}"
    );
}

#[test]
fn truncated_component_is_refused() {
    let l = Legion::new();
    let bytes = std::fs::read(plugin("hello-toolchain")).unwrap();
    let (_d, path) = temp_file("cut.wasm", &bytes[..bytes.len() / 2]);
    let err = add_fails_cleanly(&l, &[path.to_str().unwrap()]);
    assert!(err.contains("toolchain 'cut' does not compile"), "{err}");
}

#[test]
fn contract_version_mismatch_names_both_versions() {
    let l = Legion::new();
    let err = add_fails_cleanly(&l, &[plugin("future-contract").to_str().unwrap()]);
    assert!(
        err.contains(
            "targets legion:toolchain@9.0.0, but this host supports legion:toolchain@0.1.0, legion:toolchain@0.2.0"
        ),
        "{err}"
    );
}

#[test]
fn invalid_name_is_refused() {
    let l = Legion::new();
    let err = add_fails_cleanly(
        &l,
        &[
            plugin("hello-toolchain").to_str().unwrap(),
            "--name",
            "Bad Name",
        ],
    );
    assert!(
        err.contains("'Bad Name' is not a valid toolchain name"),
        "{err}"
    );
}

#[test]
fn missing_file_is_named() {
    let l = Legion::new();
    let err = add_fails_cleanly(&l, &["/nonexistent/x.wasm"]);
    assert!(err.contains("/nonexistent/x.wasm"), "{err}");
}

#[test]
fn bad_config_flag_is_refused_by_the_parser() {
    let l = Legion::new();
    let err = l.fails(&[
        "toolchain",
        "add",
        plugin("hello-toolchain").to_str().unwrap(),
        "--config",
        "novalue",
    ]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
}

#[test]
fn unknown_toolchain_lists_the_known_ones() {
    let l = Legion::new();
    l.ok(&["toolchain", "ls"]);
    let (_d, req) = temp_file("req.json", b"{}");
    for args in [
        vec!["toolchain", "show", "nope"],
        vec!["toolchain", "rm", "nope"],
        vec![
            "toolchain",
            "plan",
            "nope",
            "--request",
            req.to_str().unwrap(),
        ],
    ] {
        let err = l.fails(&args);
        assert!(
            err.contains("unknown toolchain 'nope'; registered: docker-rest, mlflow, python"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn malformed_request_json_names_the_file_and_field() {
    let l = Legion::new();
    let src = tempfile::tempdir().unwrap();
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "key must be a string"),
        (
            br#"{"model": {"name": "m", "version": 1}}"#,
            "field `model.version`: invalid type: integer `1`, expected a string",
        ),
        (
            br#"{"model": {"name": "m", "version": "1"}, "hyperParameter": {}}"#,
            "unknown field `hyperParameter`",
        ),
        (
            br#"{"model": {"name": "m", "version": "1"}, "resources": {"cpuMillis": -1}}"#,
            "field `resources.cpuMillis`",
        ),
    ];
    for (body, expected) in cases {
        let (_d, req) = temp_file("bad.json", body);
        let err = l.fails(&[
            "toolchain",
            "plan",
            "python",
            "--request",
            req.to_str().unwrap(),
            "--source",
            src.path().to_str().unwrap(),
        ]);
        assert!(
            err.contains("bad.json") && err.contains(expected),
            "expected {expected:?} in: {err}"
        );
    }
}

#[test]
fn plan_needs_a_source_folder() {
    let l = Legion::new();
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}}"#);
    let err = l.fails(&[
        "toolchain",
        "plan",
        "python",
        "--request",
        req.to_str().unwrap(),
    ]);
    assert!(
        err.contains("--source") && err.contains("preopens the source folder"),
        "{err}"
    );
}

#[test]
fn tampered_stored_wasm_is_refused_by_its_pinned_digest() {
    let l = Legion::new();
    let row = {
        l.ok(&[
            "toolchain",
            "add",
            plugin("hello-toolchain").to_str().unwrap(),
        ]);
        l.json(&["toolchain", "show", "hello"])
    };
    let hex = row["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    // Drop the compiled copy and swap the stored wasm for another component.
    for f in l.files() {
        if f.ends_with(".cwasm") {
            std::fs::remove_file(l.home.path().join(f)).unwrap();
        }
    }
    let blob = l
        .home
        .path()
        .join("toolchains/sha256")
        .join(format!("{hex}.wasm"));
    std::fs::copy(plugin("hostile"), &blob).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("train.py"), "").unwrap();
    let (_d, req) = temp_file("req.json", br#"{"model": {"name": "m", "version": "1"}}"#);
    let err = l.fails(&[
        "toolchain",
        "plan",
        "hello",
        "--request",
        req.to_str().unwrap(),
        "--source",
        src.path().to_str().unwrap(),
    ]);
    assert!(
        err.contains("pinned to sha256:") && err.contains("re-register"),
        "{err}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn contract_0_1_0_and_0_2_0_plugins_run_side_by_side() {
    let l = Legion::new();
    l.ok(&[
        "toolchain",
        "add",
        plugin("contract-v0-1").to_str().unwrap(),
        "--name",
        "old",
    ]);
    l.ok(&[
        "toolchain",
        "add",
        plugin("noop").to_str().unwrap(),
        "--name",
        "new",
    ]);
    let list = l.json(&["toolchain", "ls"]);
    let contract = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["contract"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(contract("old"), "legion:toolchain@0.1.0");
    assert_eq!(contract("new"), "legion:toolchain@0.2.0");
    assert_eq!(contract("python"), "legion:toolchain@0.2.0");

    // Both plan in one host, each through its own version's bindings.
    let (src, _) = temp_file("train.py", b"");
    let (_d, req) = temp_file(
        "req.json",
        br#"{"model": {"name": "m", "version": "1"}, "hyperParameters": {"epochs": "many"}}"#,
    );
    for name in ["old", "new"] {
        let plan = l.json(&[
            "toolchain",
            "plan",
            name,
            "--request",
            req.to_str().unwrap(),
            "--source",
            src.path().to_str().unwrap(),
        ]);
        assert_eq!(plan["steps"].as_array().unwrap().len(), 1, "{name}: {plan}");
    }
    // A 0.1.0 parameter's kind is documentation: `epochs=many` is not
    // refused, and the old plugin trains.
    let run = l.json(&[
        "train",
        src.path().to_str().unwrap(),
        "-t",
        "old",
        "--name",
        "m",
        "-P",
        "epochs=many",
    ]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let log = l.ok(&["runs", "logs", run["id"].as_str().unwrap()]);
    assert!(log.contains("contract 0.1.0 plan: epochs=many"), "{log}");
    let run = l.json(&[
        "train",
        src.path().to_str().unwrap(),
        "-t",
        "new",
        "--name",
        "m",
        "--version",
        "2",
    ]);
    assert_eq!(run["state"], "succeeded", "{run}");

    // 0.2.0 parameters are typed, and held before the plugin is called.
    let python = l.json(&["toolchain", "show", "python"]);
    let format = python["info"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "output-format")
        .cloned()
        .unwrap_or_else(|| panic!("{python:#}"));
    assert_eq!(format["kind"], "choice");
    assert_eq!(format["choices"], serde_json::json!(["csv", "jsonl"]));
    let docker = l.json(&["toolchain", "show", "docker-rest"]);
    let workers = docker["info"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "workers")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            workers["kind"].as_str(),
            workers["minimum"].as_i64(),
            workers["maximum"].as_i64()
        ),
        (Some("int"), Some(1), Some(64))
    );
    let err = l.fails(&["package", "m:1", "--arg", "workers=0"]);
    assert!(
        err.contains("--arg workers") && err.contains("whole number from 1 to 64"),
        "{err}"
    );
}

#[test]
fn built_ins_and_files_are_held_to_the_trust_policy_by_detached_signatures() {
    // The build signed the built-ins (scripts/sign-builtins.sh): trusting
    // its key keeps them.
    let l = Legion::new();
    let build_key = common::plugin_dir().join("legion-build.pub");
    l.ok(&["toolchain", "trust", "add", build_key.to_str().unwrap()]);
    assert_eq!(
        names(&l.json(&["toolchain", "ls"])),
        ["docker-rest", "mlflow", "python"]
    );

    // Trusting only another key: the built-ins are left out, and using
    // one says why, naming both keys.
    let other = Legion::new();
    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("mine");
    let made = other.json(&["toolchain", "keygen", prefix.to_str().unwrap()]);
    let mine = made["keyId"].as_str().unwrap().to_string();
    let pub_key = keys.path().join("mine.pub");
    let key = keys.path().join("mine.key");
    other.ok(&["toolchain", "trust", "add", pub_key.to_str().unwrap()]);
    assert_eq!(
        names(&other.json(&["toolchain", "ls"])),
        Vec::<String>::new()
    );
    let err = other.fails(&["toolchain", "show", "python"]);
    assert!(
        err.contains("no signature by a trusted key")
            && err.contains(&mine)
            && err.contains("(not trusted)"),
        "{err}"
    );

    // A file: unsigned refused (saying how to sign), signed registered,
    // changed after signing refused.
    let file = keys.path().join("hello.wasm");
    std::fs::copy(plugin("hello-toolchain"), &file).unwrap();
    let err = other.fails(&["toolchain", "add", file.to_str().unwrap()]);
    assert!(err.contains("legion toolchain sign"), "{err}");
    other.ok(&[
        "toolchain",
        "sign",
        file.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let verified = other.json(&["toolchain", "verify", file.to_str().unwrap()]);
    assert_eq!(verified["keyId"], mine.as_str());
    other.ok(&["toolchain", "add", file.to_str().unwrap()]);
    assert_eq!(names(&other.json(&["toolchain", "ls"])), ["hello"]);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&file, &bytes).unwrap();
    let err = other.fails(&[
        "toolchain",
        "add",
        file.to_str().unwrap(),
        "--name",
        "changed",
    ]);
    assert!(err.contains("does not verify"), "{err}");

    // The keys may live elsewhere (a cluster mounts the chart's):
    // LEGION_TRUSTED_KEYS names the folder.
    let mounted = tempfile::tempdir().unwrap();
    std::fs::copy(&pub_key, mounted.path().join("ci.pub")).unwrap();
    let fresh = Legion::new();
    let out = fresh
        .cmd()
        .env("LEGION_TRUSTED_KEYS", mounted.path())
        .args(["toolchain", "trust", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&mine));
    let out = fresh
        .cmd()
        .env("LEGION_TRUSTED_KEYS", mounted.path())
        .args(["toolchain", "show", "python"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the mounted policy holds the built-ins"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no signature by a trusted key") && err.contains(&mine),
        "{err}"
    );
}
