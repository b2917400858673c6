//! The command line in remote mode (`legion --server URL --token T …`)
//! against a real `legion server`: it prints what local mode prints on
//! the same data — the same tables, the same JSON — trains and packages
//! on the server with the log followed here, registers a toolchain by
//! upload, cancels the server's run on Ctrl-C, and refuses what only
//! works locally, naming it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};

use common::api::{Server, Tokens};
use common::Legion;
use serde_json::Value;

struct Setup {
    l: Legion,
    tokens: Tokens,
    projects: tempfile::TempDir,
    server: Server,
}

impl Setup {
    fn new() -> Self {
        let l = Legion::new();
        let tokens = Tokens::new(&l);
        let projects = tempfile::tempdir().unwrap();
        // `DIR/layout:NAME`: the folder above the layout is allowed.
        let layout = common::registry::base_layout();
        let base_dir = std::path::Path::new(&layout).parent().unwrap();
        let server = Server::start(
            &l,
            Some(&tokens.file),
            &[
                "--allow-path",
                projects.path().to_str().unwrap(),
                "--allow-path",
                base_dir.to_str().unwrap(),
            ],
        );
        Setup {
            l,
            tokens,
            projects,
            server,
        }
    }

    /// `legion --server … --token TOKEN ARGS`.
    fn remote_cmd(&self, token: &str, args: &[&str]) -> std::process::Command {
        let mut c = self.l.cmd();
        c.args(["--server", &self.server.base, "--token", token])
            .args(args);
        c
    }

    fn remote(&self, token: &str, args: &[&str]) -> Output {
        self.remote_cmd(token, args).output().unwrap()
    }

    /// Remote, asserting success; stdout.
    fn remote_ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.remote(token, args);
        assert!(
            out.status.success(),
            "legion --server {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Remote, asserting failure; stderr.
    fn remote_fails(&self, token: &str, args: &[&str]) -> String {
        let out = self.remote(token, args);
        assert!(
            !out.status.success(),
            "legion --server {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A project whose `train.py` runs `body`, then writes a model.
    fn project(&self, name: &str, body: &str) -> String {
        common::project(self.projects.path(), name, body, common::ECHO_PREDICT)
    }
}

/// Local and remote print the same for `args` on the same data.
fn same(s: &Setup, token: &str, args: &[&str]) -> String {
    let local = s.l.ok(args);
    let remote = s.remote_ok(token, args);
    assert_eq!(remote, local, "legion {args:?}: remote and local differ");
    let mut json = vec!["-o", "json"];
    json.extend_from_slice(args);
    let local_json: Value = serde_json::from_str(&s.l.ok(&json)).unwrap();
    let remote_json: Value = serde_json::from_str(&s.remote_ok(token, &json)).unwrap();
    assert_eq!(
        remote_json, local_json,
        "legion -o json {args:?}: remote and local differ"
    );
    remote
}

#[test]
fn remote_mode_trains_packages_and_prints_what_local_mode_prints() {
    let s = Setup::new();
    let (admin, sci, viewer) = (&s.tokens.admin, &s.tokens.scientist, &s.tokens.viewer);
    let hello = common::plugin("hello-toolchain");
    let hello = hello.to_str().unwrap();

    // Registration uploads the component: an admin's right.
    let err = s.remote_fails(viewer, &["toolchain", "add", hello]);
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    let added: Value = serde_json::from_str(&s.remote_ok(
        admin,
        &[
            "-o",
            "json",
            "toolchain",
            "add",
            hello,
            "--config",
            "requirements=numpy",
        ],
    ))
    .unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(hello).unwrap()
        ))
    );
    assert_eq!(added["name"], "hello");
    assert_eq!(added["digest"], digest.as_str());
    let err = s.remote_fails(admin, &["toolchain", "add", hello]);
    assert!(
        err.contains("already registered") && err.contains("409"),
        "{err}"
    );
    s.remote_ok(admin, &["toolchain", "add", hello, "--replace"]);
    same(&s, viewer, &["toolchain", "ls"]);
    let shown = same(&s, viewer, &["toolchain", "show", "hello"]);
    assert!(shown.contains(&digest), "{shown}");

    // A reference is sent for the server to pull; pushing is done here.
    let reg = common::registry::Registry::start();
    let tag = format!("{}/toolchains/noop:1", reg.addr);
    let err = s.remote_fails(admin, &["toolchain", "push", hello, &tag]);
    assert!(err.contains("drop --server"), "{err}");
    s.l.ok(&[
        "toolchain",
        "push",
        common::plugin("noop").to_str().unwrap(),
        &tag,
    ]);
    let added: Value = serde_json::from_str(&s.remote_ok(
        admin,
        &[
            "-o",
            "json",
            "toolchain",
            "add",
            &tag,
            "--name",
            "noop-remote",
        ],
    ))
    .unwrap();
    assert_eq!(added["name"], "noop-remote");
    assert!(
        added["origin"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/toolchains/noop@sha256:", reg.addr)),
        "{added}"
    );
    same(&s, viewer, &["toolchain", "show", "noop-remote"]);

    // A training on the server, its log followed here.
    let src = s.project(
        "remote-proj",
        "for i in range(3):\n    print(f'epoch {i}', flush=True)",
    );
    let out = s.remote(sci, &["train", &src, "-t", "python", "--version", "2"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("accepted by") && stderr.contains("  epoch 2"),
        "{stderr}"
    );
    // "run ID succeeded in 1.2s", as locally.
    let id = stdout
        .lines()
        .filter(|l| l.contains(" succeeded"))
        .find_map(|l| Some(l.strip_prefix("run ")?.split_once(' ')?.0.to_string()))
        .unwrap_or_else(|| panic!("no run line: {stdout}"));
    assert!(
        stdout.contains("model   remote-proj:2"),
        "the model's name defaults to the folder's, as locally: {stdout}"
    );

    // What it made reads the same from either side.
    same(&s, viewer, &["runs", "ls"]);
    same(&s, viewer, &["runs", "show", &id]);
    same(&s, viewer, &["models", "ls"]);
    same(&s, viewer, &["models", "show", "remote-proj:2"]);
    let log = s.remote_ok(viewer, &["runs", "logs", &id]);
    assert_eq!(log, s.l.ok(&["runs", "logs", &id]));
    assert!(log.contains("epoch 2"), "{log}");
    assert_eq!(s.remote_ok(viewer, &["runs", "logs", "-f", &id]), log);

    // A packaging on the server.
    let base = format!("oci:{}", common::registry::base_layout());
    let packaged: Value = serde_json::from_str(&s.remote_ok(
        sci,
        &["-o", "json", "package", "remote-proj:2", "--base", &base],
    ))
    .unwrap();
    assert_eq!(packaged["run"]["state"], "succeeded", "{packaged}");
    assert_eq!(packaged["run"]["kind"], "packaging");
    same(&s, viewer, &["images", "ls"]);
    same(&s, viewer, &["runs", "ls"]);

    // Refusals name what is wrong.
    let err = s.remote_fails(sci, &["train", &src, "-t", "nope"]);
    assert!(err.contains("toolchain") && err.contains("nope"), "{err}");
    let err = s.remote_fails(sci, &["train", &src, "-t", "python", "--executor", "kube"]);
    assert!(
        err.contains("--executor") && err.contains("--server"),
        "{err}"
    );
    let err = s.remote_fails(viewer, &["train", &src, "-t", "python"]);
    assert!(err.contains("403"), "{err}");
    let err = s.remote_fails("lgn_wrong", &["runs", "ls"]);
    assert!(
        err.contains("401") && err.contains("unauthenticated"),
        "{err}"
    );
    let err = s.remote_fails(viewer, &["runs", "show", "nope"]);
    assert!(err.contains("no run 'nope'"), "{err}");
    for args in [
        &["serve", "x:1"][..],
        &["toolchain", "plan", "hello", "--request", "-"],
        &["runs", "attach", &id],
    ] {
        let err = s.remote_fails(viewer, args);
        assert!(
            err.contains("works on this machine only"),
            "{args:?}: {err}"
        );
    }

    // Removal, an admin's right too.
    assert!(s
        .remote_fails(sci, &["toolchain", "rm", "hello"])
        .contains("403"));
    let removed = s.remote_ok(admin, &["toolchain", "rm", "hello"]);
    assert!(removed.contains("removed toolchain 'hello'"), "{removed}");
}

#[test]
fn ctrl_c_cancels_the_run_on_the_server() {
    let s = Setup::new();
    let src = s.project("slow", "print('started', flush=True)\ntime.sleep(600)");
    let mut child = s
        .remote_cmd(
            &s.tokens.scientist,
            &["-o", "json", "train", &src, "-t", "python"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs (its line reached this terminal).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the CLI ended before the step started: {seen}"
        );
        seen.push_str(&line);
        if line.contains("  started") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("cancelling"), "{rest}");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "cancelled", "{run}");
    // The server says so too.
    let id = run["id"].as_str().unwrap();
    let (st, got) = s.server.call(
        "GET",
        &format!("/api/v1/trainings/{id}"),
        Some(&s.tokens.viewer),
    );
    assert_eq!((st, &got["state"]), (200, &Value::from("cancelled")));
}
