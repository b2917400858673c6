//! `legion server` over real HTTP, on SQLite and on a real PostgreSQL
//! (`NAME::sqlite`, `NAME::postgres`), as an outside client calls it:
//! health and readiness, bearer tokens with roles (401 without a valid one,
//! 403 for a role without the right), toolchains, and trainings listed with
//! filters and cursor paging, read one by one, with their logs.

mod common;

use std::process::Command;

use common::api::{legion_on, Db, Server, Tokens};
use common::postgres::Postgres;
use common::{free_port, Legion};
use serde_json::{json, Value};

fn train(l: &Legion, name: &str, version: &str) -> String {
    common::train_tiny(l, name, version)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

struct Setup {
    l: Legion,
    server: Server,
    admin: String,
    scientist: String,
    viewer: String,
    _tokens: Tokens,
    _pg: Option<Postgres>,
}

fn setup(db: Db) -> Setup {
    let (l, pg) = legion_on(db);
    let tokens = Tokens::new(&l);
    let text = std::fs::read_to_string(&tokens.file).unwrap();
    assert!(
        !text.contains(&tokens.admin),
        "the file keeps hashes, not tokens"
    );
    let server = Server::start(&l, Some(&tokens.file), &[]);
    Setup {
        l,
        server,
        admin: tokens.admin.clone(),
        scientist: tokens.scientist.clone(),
        viewer: tokens.viewer.clone(),
        _tokens: tokens,
        _pg: pg,
    }
}

fn health_and_readiness_answer_without_a_token(db: Db) {
    let s = setup(db);
    assert_eq!(
        s.server.call("GET", "/health", None),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        s.server.call("GET", "/ready", None),
        (200, json!({"status": "ready"}))
    );
}

fn each_role_gets_what_it_may_and_nothing_more(db: Db) {
    let s = setup(db);
    let srv = &s.server;
    // No token, a wrong one, one without "Bearer".
    let r = srv
        .http
        .get(format!("{}/api/v1/trainings", srv.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (st, body) = srv.call("GET", "/api/v1/trainings", Some("lgn_wrong"));
    assert_eq!(st, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let r = srv
        .http
        .get(format!("{}/api/v1/trainings", srv.base))
        .header("Authorization", &s.viewer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a token without the Bearer scheme");

    // Every role reads.
    for t in [&s.viewer, &s.scientist, &s.admin] {
        let (st, body) = srv.call("GET", "/api/v1/toolchains", Some(t));
        assert_eq!(st, 200, "{body}");
        let names: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"python"), "{names:?}");
    }

    // Only an admin removes a toolchain.
    s.l.ok(&[
        "toolchain",
        "add",
        common::plugin("hello-toolchain").to_str().unwrap(),
    ]);
    for (t, role) in [(&s.viewer, "viewer"), (&s.scientist, "data-scientist")] {
        let (st, body) = srv.call("DELETE", "/api/v1/toolchains/hello", Some(t));
        assert_eq!(st, 403, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(role) && message.contains("admin"),
            "{message}"
        );
    }
    let (st, body) = srv.call("DELETE", "/api/v1/toolchains/hello", Some(&s.admin));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["name"], "hello");
    let (st, body) = srv.call("GET", "/api/v1/toolchains/hello", Some(&s.viewer));
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("not-found"))
    );
    let (st, _) = srv.call("DELETE", "/api/v1/toolchains/hello", Some(&s.admin));
    assert_eq!(st, 404);
    let (st, _) = srv.call("GET", "/api/v1/nothing-here", Some(&s.admin));
    assert_eq!(st, 404);
}

fn trainings_are_listed_by_filter_and_cursor_and_read_with_their_logs(db: Db) {
    let s = setup(db);
    let srv = &s.server;
    let a = train(&s.l, "tiny", "1");
    let b = train(&s.l, "tiny", "2");
    let c = train(&s.l, "other", "1");
    let t = Some(s.viewer.as_str());

    // Newest first, two a page, the cursor to the rest.
    let (st, page) = srv.call("GET", "/api/v1/trainings?limit=2", t);
    assert_eq!(st, 200, "{page}");
    let ids = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), [c.clone(), b.clone()]);
    let next = page["next"].as_str().expect("a next cursor").to_string();
    let (_, rest) = srv.call(
        "GET",
        &format!("/api/v1/trainings?limit=2&cursor={next}"),
        t,
    );
    assert_eq!(ids(&rest), vec![a.clone()]);
    assert!(rest.get("next").is_none(), "the last page: {rest}");

    // Filters.
    let (_, tiny) = srv.call("GET", "/api/v1/trainings?model=tiny", t);
    assert_eq!(ids(&tiny), [b.clone(), a.clone()]);
    let (_, v2) = srv.call("GET", "/api/v1/trainings?model=tiny&version=2", t);
    assert_eq!(ids(&v2), vec![b.clone()]);
    let (_, ok) = srv.call(
        "GET",
        "/api/v1/trainings?state=succeeded&toolchain=python",
        t,
    );
    assert_eq!(ids(&ok).len(), 3);
    let (_, none) = srv.call("GET", "/api/v1/trainings?state=failed", t);
    assert_eq!(ids(&none), Vec::<String>::new());
    let (_, later) = srv.call("GET", "/api/v1/trainings?since=2999-01-01T00:00:00Z", t);
    assert_eq!(ids(&later), Vec::<String>::new());
    let (_, earlier) = srv.call("GET", "/api/v1/trainings?until=2999-01-01T00:00:00Z", t);
    assert_eq!(ids(&earlier).len(), 3);
    let (_, packagings) = srv.call("GET", "/api/v1/packagings", t);
    assert_eq!(ids(&packagings), Vec::<String>::new());

    // Bad queries name what is wrong.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("state=done", "state"),
        ("cursor=xyz", "cursor"),
        ("since=yesterday", "since"),
        ("colour=blue", "colour"),
    ] {
        let (st, body) = srv.call("GET", &format!("/api/v1/trainings?{query}"), t);
        assert_eq!(st, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }

    // One run, as the CLI shows it; its log.
    let (st, run) = srv.call("GET", &format!("/api/v1/trainings/{a}"), t);
    assert_eq!(st, 200);
    assert_eq!(run, s.l.json(&["runs", "show", &a]));
    let (st, _) = srv.call("GET", &format!("/api/v1/packagings/{a}"), t);
    assert_eq!(st, 404, "a training is not a packaging");
    let (st, log) = srv.call("GET", &format!("/api/v1/trainings/{a}/logs"), t);
    assert_eq!(st, 200);
    assert!(log.as_str().unwrap().contains(&format!("run {a}")), "{log}");
    let (st, _) = srv.call("GET", "/api/v1/trainings/nope/logs", t);
    assert_eq!(st, 404);
}

/// `POST /api/v1/toolchains` with a `multipart/form-data` body, as
/// `curl -F` sends it.
fn upload(srv: &Server, token: &str, parts: Vec<(&str, Part)>) -> (u16, Value, Option<String>) {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (name, part) in parts {
        form = match part {
            Part::File(file, bytes) => form.part(
                name.to_string(),
                reqwest::blocking::multipart::Part::bytes(bytes).file_name(file.to_string()),
            ),
            Part::Text(t) => form.text(name.to_string(), t.to_string()),
        };
    }
    let r = srv
        .http
        .post(format!("{}/api/v1/toolchains", srv.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().unwrap(), location)
}

enum Part {
    File(&'static str, Vec<u8>),
    Text(&'static str),
}

fn toolchains_are_registered_by_upload_and_every_replica_runs_them(db: Db) {
    let s = setup(db);
    let srv = &s.server;
    let wasm = std::fs::read(common::plugin("hello-toolchain")).unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wasm))
    );
    let file = || Part::File("hello-toolchain.wasm", wasm.clone());

    // Only an admin registers.
    for t in [&s.viewer, &s.scientist] {
        let (st, body, _) = upload(srv, t, vec![("component", file())]);
        assert_eq!(st, 403, "{body}");
    }
    let (st, body, location) = upload(
        srv,
        &s.admin,
        vec![
            ("component", file()),
            ("config", Part::Text("requirements=numpy")),
        ],
    );
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["name"], "hello", "the name the toolchain gives itself");
    assert_eq!(body["digest"], digest.as_str());
    assert_eq!(body["interfaces"], json!(["trainer"]));
    assert_eq!(body["config"], json!({"requirements": "numpy"}));
    assert_eq!(location.as_deref(), Some("/api/v1/toolchains/hello"));
    let (st, got) = srv.call("GET", "/api/v1/toolchains/hello", Some(&s.viewer));
    assert_eq!((st, &got), (200, &body));

    // Again: 409 unless replace=true; under another name it is a second one.
    let (st, body, _) = upload(srv, &s.admin, vec![("component", file())]);
    assert_eq!(st, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("replace=true") && message.contains(&digest),
        "{message}"
    );
    let (st, body, _) = upload(
        srv,
        &s.admin,
        vec![
            ("component", file()),
            ("replace", Part::Text("true")),
            ("config", Part::Text("requirements=pandas")),
        ],
    );
    assert_eq!(
        (st, &body["config"]),
        (201, &json!({"requirements": "pandas"})),
        "{body}"
    );
    let (st, body, _) = upload(
        srv,
        &s.admin,
        vec![("name", Part::Text("hello-two")), ("component", file())],
    );
    assert_eq!(
        (st, body["name"].as_str()),
        (201, Some("hello-two")),
        "{body}"
    );

    // What is not a usable component is refused naming the file, and
    // nothing is kept.
    for (file, bytes, says) in [
        (
            "notes.txt",
            b"hello".to_vec(),
            "notes.txt is not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core.wasm is a core WebAssembly module",
        ),
    ] {
        let (st, body, _) = upload(
            srv,
            &s.admin,
            vec![
                ("name", Part::Text("broken")),
                ("component", Part::File(file, bytes)),
            ],
        );
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (422, Some("invalid-toolchain")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (st, _) = srv.call("GET", "/api/v1/toolchains/broken", Some(&s.admin));
    assert_eq!(st, 404);

    // A malformed form names the part.
    for (parts, field) in [
        (vec![("name", Part::Text("x"))], "component"),
        (
            vec![("component", file()), ("name", Part::Text("Bad Name"))],
            "name",
        ),
        (
            vec![("component", file()), ("config", Part::Text("novalue"))],
            "config",
        ),
        (
            vec![("component", file()), ("replace", Part::Text("yes"))],
            "replace",
        ),
        (
            vec![("component", file()), ("colour", Part::Text("red"))],
            "colour",
        ),
    ] {
        let (st, body, _) = upload(srv, &s.admin, parts);
        assert_eq!(st, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    // Not a form at all.
    let (st, body) = srv.send(
        "POST",
        "/api/v1/toolchains",
        Some(&s.admin),
        Some(&json!({})),
    );
    assert_eq!(st, 400, "{body}");

    // Another replica on the same database (its own data directory, which
    // has never seen the file) plans with the uploaded toolchain and its
    // config: the component travels in the database.
    if let Some(url) = &s.l.database {
        let other = Legion::with_database(url.clone());
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("train.py"), "print('hi')\n").unwrap();
        let req = src.path().join("req.json");
        std::fs::write(&req, r#"{"model": {"name": "m", "version": "1"}}"#).unwrap();
        let plan = other.json(&[
            "toolchain",
            "plan",
            "hello",
            "--request",
            req.to_str().unwrap(),
            "--source",
            src.path().to_str().unwrap(),
        ]);
        assert_eq!(plan["steps"][0]["name"], "train", "{plan}");
        assert_eq!(plan["python"]["requirements"], json!(["pandas"]), "{plan}");
    }
}

fn toolchains_are_registered_from_a_registry_pinned_by_digest(db: Db) {
    let s = setup(db);
    let srv = &s.server;
    let reg = common::registry::Registry::start();
    let wasm = std::fs::read(common::plugin("noop")).unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wasm))
    );
    let tag = format!("{}/toolchains/noop:1", reg.addr);
    let pushed = s.l.json(&[
        "toolchain",
        "push",
        common::plugin("noop").to_str().unwrap(),
        &tag,
    ]);
    let manifest = pushed["push"]["digest"].as_str().unwrap();
    let pinned = format!("{}/toolchains/noop@{manifest}", reg.addr);
    let body = json!({"image": pinned, "name": "from-registry", "config": {"k": "v"}});

    // Only an admin registers.
    for t in [&s.viewer, &s.scientist] {
        let (st, b) = srv.send("POST", "/api/v1/toolchains", Some(t), Some(&body));
        assert_eq!(st, 403, "{b}");
    }
    let (st, row) = srv.send("POST", "/api/v1/toolchains", Some(&s.admin), Some(&body));
    assert_eq!(st, 201, "{row}");
    assert_eq!(row["digest"], digest.as_str());
    assert_eq!(row["origin"], pinned.as_str());
    assert_eq!(row["config"], json!({"k": "v"}));
    assert_eq!(row["info"]["name"], "noop");
    let (st, got) = srv.call("GET", "/api/v1/toolchains/from-registry", Some(&s.viewer));
    assert_eq!((st, &got), (200, &row));

    // What cannot be registered: named, 4xx, nothing kept.
    for (image, status, says) in [
        ("toolchains/noop:1".to_string(), 400, "names no registry"),
        (
            format!("{}/toolchains/noop", reg.addr),
            400,
            "neither a tag nor a digest",
        ),
        (
            format!("{}/toolchains/none:1", reg.addr),
            422,
            "toolchains/none:1",
        ),
    ] {
        let (st, b) = srv.send(
            "POST",
            "/api/v1/toolchains",
            Some(&s.admin),
            Some(&json!({"image": image, "name": "broken"})),
        );
        assert_eq!(st, status, "{image}: {b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (st, b) = srv.send(
        "POST",
        "/api/v1/toolchains",
        Some(&s.admin),
        Some(&json!({"image": tag, "colour": "red"})),
    );
    assert_eq!(st, 400, "{b}");
    let (st, _) = srv.call("GET", "/api/v1/toolchains/broken", Some(&s.admin));
    assert_eq!(st, 404);

    // Another replica on the same database plans with it without the
    // registry: the pinned component travels in the database.
    drop(reg);
    if let Some(url) = &s.l.database {
        let other = Legion::with_database(url.clone());
        let src = tempfile::tempdir().unwrap();
        let req = src.path().join("req.json");
        std::fs::write(&req, r#"{"model": {"name": "m", "version": "1"}}"#).unwrap();
        let plan = other.json(&[
            "toolchain",
            "plan",
            "from-registry",
            "--request",
            req.to_str().unwrap(),
            "--source",
            src.path().to_str().unwrap(),
        ]);
        assert_eq!(plan["steps"][0]["name"], "noop", "{plan}");
    }
}

#[test]
fn without_tokens_the_server_refuses_to_listen_beyond_loopback() {
    let l = Legion::new();
    let out = l
        .cmd()
        .args(["server", "--listen", &format!("0.0.0.0:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--tokens"),
        "{err}"
    );
    // On loopback it serves, as an admin for everyone, and says so.
    let s = Server::start(&l, None, &[]);
    let (st, _) = s.call("GET", "/api/v1/trainings", None);
    assert_eq!(st, 200);
    // A bad tokens file stops it at start, naming the entry.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokens.json");
    std::fs::write(
        &bad,
        r#"{"tokens": [{"name": "x", "role": "viewer", "sha256": "12"}]}"#,
    )
    .unwrap();
    let out = Command::new(common::legion_bin())
        .env("LEGION_HOME", l.home.path())
        .args(["server", "--tokens", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens[0] 'x'"), "{err}");
}

on_both_stores!(
    health_and_readiness_answer_without_a_token,
    each_role_gets_what_it_may_and_nothing_more,
    trainings_are_listed_by_filter_and_cursor_and_read_with_their_logs,
    toolchains_are_registered_by_upload_and_every_replica_runs_them,
    toolchains_are_registered_from_a_registry_pinned_by_digest,
);
