//! Trainings and packagings started through `legion server`, over real
//! HTTP on SQLite, as a pipeline would: created (planned before the 202),
//! followed in their logs and in the event stream (resumed from a
//! cursor), cancelled, refused with the field named; started again by the
//! next server when one is killed mid-run; and 50 concurrent creates on
//! two replicas, each run made once and started once. Each on SQLite and
//! on a real PostgreSQL (`NAME::sqlite`, `NAME::postgres`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::api::{legion_on, Db, Server, Sse, Tokens};
use common::postgres::Postgres;
use common::Legion;
use serde_json::{json, Value};

/// A project under `root` whose `train.py` runs `body`, then writes a model.
fn project(root: &Path, name: &str, body: &str) -> String {
    common::project(root, name, body, common::ECHO_PREDICT)
}

fn training(source: &str, name: &str, version: &str) -> Value {
    json!({
        "toolchain": "python",
        "model": {"name": name, "version": version},
        "source": {"uri": source},
    })
}

struct Setup {
    l: Legion,
    tokens: Tokens,
    projects: tempfile::TempDir,
    pg: Option<Postgres>,
}

impl Setup {
    fn new(db: Db) -> Self {
        let (l, pg) = legion_on(db);
        let tokens = Tokens::new(&l);
        Setup {
            l,
            tokens,
            projects: tempfile::tempdir().unwrap(),
            pg,
        }
    }

    fn server(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--allow-path", self.projects.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start(&self.l, Some(&self.tokens.file), &args)
    }
}

/// Waits (a hang guard) until the run's log holds `text`.
fn wait_log(srv: &Server, id: &str, token: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (st, log) = srv.call("GET", &format!("/api/v1/trainings/{id}/logs"), Some(token));
        assert_eq!(st, 200);
        if log.as_str().unwrap_or_default().contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "'{text}' never reached the log of {id}: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn a_training_is_planned_before_it_is_accepted_then_followed_to_its_model_and_packaged(db: Db) {
    let s = Setup::new(db);
    let srv = s.server(&["--allow-path", "/var/cache/legion/base-image"]);
    let (sci, viewer) = (s.tokens.scientist.as_str(), s.tokens.viewer.as_str());
    let src = project(
        s.projects.path(),
        "epochs",
        "for i in range(3):\n    print(f'epoch {i}', flush=True)\n    time.sleep(0.3)",
    );
    let body = training(&src, "epochs", "1");

    // A viewer may not create; no token is 401.
    assert_eq!(
        srv.send("POST", "/api/v1/trainings", Some(viewer), Some(&body))
            .0,
        403
    );
    assert_eq!(
        srv.send("POST", "/api/v1/trainings", None, Some(&body)).0,
        401
    );

    // The stream of training changes, opened before the create.
    let mut watch = Sse::new(srv.raw("GET", "/api/v1/trainings?watch=true", Some(viewer), None));

    let r = srv.raw("POST", "/api/v1/trainings", Some(sci), Some(&body));
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let run: Value = r.json().unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/trainings/{id}"));
    // Accepted means planned: the toolchain's plan is in the answer; the
    // run waits for a slot (queued) or has one (running).
    assert!(
        ["queued", "running"].contains(&run["state"].as_str().unwrap()),
        "{run:#}"
    );
    assert!(
        run["plan"]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{run:#}"
    );
    assert_eq!(run["model"], json!({"name": "epochs", "version": "1"}));
    assert!(
        run["owner"].as_str().is_some(),
        "the replica holding it: {run:#}"
    );

    // The log, followed: it ends when the run does, with every line.
    let mut followed = String::new();
    srv.raw(
        "GET",
        &format!("/api/v1/trainings/{id}/logs?follow=true"),
        Some(viewer),
        None,
    )
    .read_to_string(&mut followed)
    .unwrap();
    for line in [
        "epoch 0",
        "epoch 1",
        "epoch 2",
        &format!("run {id} succeeded"),
    ] {
        assert!(followed.contains(line), "{line} missing from\n{followed}");
    }
    let (_, done) = srv.call("GET", &location, Some(viewer));
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert!(done["modelDigest"].as_str().unwrap().starts_with("sha256:"));

    // The watch saw each state, in order, with resumable ids.
    let mut states = Vec::new();
    let mut seqs = Vec::new();
    while states.last().map(String::as_str) != Some("succeeded") {
        let (seq, event, data) = watch.next_event();
        assert_eq!(event, "training");
        assert_eq!(data["runId"], id.as_str());
        assert_eq!(data["seq"], seq);
        states.push(data["state"].as_str().unwrap().to_string());
        seqs.push(seq);
    }
    assert_eq!(states, ["queued", "running", "succeeded"]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The event stream, from the start and resumed after "running",
    // by query and by Last-Event-ID as a reconnecting client sends it.
    let mut all = Sse::new(srv.raw("GET", "/api/v1/events?since=0", Some(viewer), None));
    assert_eq!(all.next_event().0, seqs[0]);
    let mut resumed = Sse::new(srv.raw(
        "GET",
        &format!("/api/v1/events?since={}", seqs[1]),
        Some(viewer),
        None,
    ));
    let (seq, _, data) = resumed.next_event();
    assert_eq!((seq, data["state"].as_str()), (seqs[2], Some("succeeded")));
    let r = srv
        .http
        .get(format!("{}/api/v1/events", srv.base))
        .bearer_auth(viewer)
        .header("Last-Event-ID", seqs[1].to_string())
        .send()
        .unwrap();
    assert_eq!(Sse::new(r).next_event().0, seqs[2]);
    for bad in ["since=-1", "kind=deployment", "since=x"] {
        let (st, body) = srv.call("GET", &format!("/api/v1/events?{bad}"), Some(viewer));
        assert_eq!(st, 400, "{bad}: {body}");
    }

    // Packaged by reference to the training, on the test base image.
    let pkg = json!({
        "trainingRef": id,
        "base": format!("oci:{}", common::registry::base_layout()),
    });
    let (st, p) = srv.send("POST", "/api/v1/packagings", Some(sci), Some(&pkg));
    assert_eq!(st, 202, "{p:#}");
    let pid = p["id"].as_str().unwrap();
    assert!(p["plan"]["layers"].as_array().is_some(), "planned: {p:#}");
    let p = srv.wait_final(
        &format!("/api/v1/packagings/{pid}"),
        viewer,
        Duration::from_secs(600),
    );
    assert_eq!(p["state"], "succeeded", "{p:#}");
    assert!(
        p["imageDigest"].as_str().unwrap().starts_with("sha256:"),
        "{p:#}"
    );
    assert_eq!(p["modelRef"], "epochs:1");
    let (_, log) = srv.call(
        "GET",
        &format!("/api/v1/packagings/{pid}/logs?follow=true"),
        Some(viewer),
    );
    assert!(
        log.as_str()
            .unwrap()
            .contains(&format!("run {pid} succeeded")),
        "{log}"
    );

    // The stored artifacts: the model, and the image packaged from it.
    let (st, models) = srv.call("GET", "/api/v1/models", Some(viewer));
    assert_eq!(st, 200, "{models}");
    let model = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reference"] == "epochs:1")
        .unwrap_or_else(|| panic!("epochs:1 not listed: {models:#}"));
    assert_eq!(model["digest"], done["modelDigest"]);
    let (st, one) = srv.call("GET", "/api/v1/models/epochs:1", Some(viewer));
    assert_eq!((st, &one["digest"]), (200, &done["modelDigest"]), "{one}");
    assert_eq!(
        srv.call("GET", "/api/v1/models/nope:1", Some(viewer)).0,
        404
    );
    let (st, images) = srv.call("GET", "/api/v1/images", Some(viewer));
    assert_eq!(st, 200, "{images}");
    assert!(
        images["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["digest"] == p["imageDigest"] && i["model"] == "epochs:1"),
        "{images:#}"
    );
}

fn bad_creates_are_refused_naming_the_field_and_refused_plans_keep_their_run(db: Db) {
    let s = Setup::new(db);
    let srv = s.server(&[]);
    let sci = s.tokens.scientist.as_str();
    let src = project(s.projects.path(), "ok", "");
    let outside = tempfile::tempdir().unwrap();
    let outside_src = project(outside.path(), "secret", "");
    let mut cases = vec![
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1"}, "source": {"uri": src}, "colour": 1}),
            400,
            "colour",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1", "x": 1}, "source": {"uri": src}}),
            400,
            "model.x",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "Bad Name", "version": "1"}, "source": {"uri": src}}),
            400,
            "model.name",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m"}, "source": {"uri": src}}),
            400,
            "version",
        ),
        (
            json!({"toolchain": "nope", "model": {"name": "m", "version": "1"}, "source": {"uri": src}}),
            400,
            "toolchain",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1"}, "source": {"uri": outside_src}}),
            400,
            "source.uri",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1"}, "source": {"uri": "/etc"}}),
            400,
            "--allow-path",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1"}, "source": {"uri": src},
                "data": [{"uri": "file:///etc/passwd", "path": "p"}]}),
            400,
            "data[0].uri",
        ),
        (
            json!({"toolchain": "python", "model": {"name": "m", "version": "1"}, "source": {"uri": src},
                "resources": {"cpu": "lots"}}),
            400,
            "resources.cpu",
        ),
        (json!([1, 2]), 400, "body"),
    ];
    cases.push((json!({"trainingRef": "nope"}), 400, "trainingRef"));
    for (i, (body, status, field)) in cases.iter().enumerate() {
        let path = if body.get("trainingRef").is_some() {
            "/api/v1/packagings"
        } else {
            "/api/v1/trainings"
        };
        let (st, answer) = srv.send("POST", path, Some(sci), Some(body));
        assert_eq!(st, *status, "case {i}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "case {i}: '{field}' not in {message}"
        );
    }
    let r = srv
        .http
        .post(format!("{}/api/v1/trainings", srv.base))
        .bearer_auth(sci)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing above made a run.
    let (_, page) = srv.call("GET", "/api/v1/trainings", Some(sci));
    assert_eq!(page["items"], json!([]));

    // The plan fails (no such entry point): 422 with the run, kept with its log.
    let mut body = training(&src, "m", "1");
    body["entrypoint"] = json!("missing.py");
    let (st, answer) = srv.send("POST", "/api/v1/trainings", Some(sci), Some(&body));
    assert_eq!(st, 422, "{answer:#}");
    assert_eq!(answer["error"]["code"], "rejected");
    let run = &answer["error"]["run"];
    assert_eq!(run["state"], "failed", "{answer:#}");
    let id = run["id"].as_str().unwrap();
    let (st, log) = srv.call("GET", &format!("/api/v1/trainings/{id}/logs"), Some(sci));
    assert_eq!(st, 200);
    assert!(
        log.as_str().unwrap().contains(&format!("run {id} failed")),
        "{log}"
    );

    // The policy refuses the plan: 422 naming the rule.
    std::fs::write(
        s.l.home.path().join("policy.json"),
        r#"{"maxCpuMillis": 100}"#,
    )
    .unwrap();
    let mut body = training(&src, "m", "2");
    body["resources"] = json!({"cpu": "2"});
    let (st, answer) = srv.send("POST", "/api/v1/trainings", Some(sci), Some(&body));
    assert_eq!(st, 422, "{answer:#}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("cpu") || message.contains("CPU"),
        "{message}"
    );

    // A packaging of a training that did not succeed is a conflict.
    let (st, answer) = srv.send(
        "POST",
        "/api/v1/packagings",
        Some(sci),
        Some(&json!({"trainingRef": id})),
    );
    assert_eq!(st, 409, "{answer}");
}

fn a_cancel_stops_the_steps_of_a_running_training(db: Db) {
    let s = Setup::new(db);
    let srv = s.server(&[]);
    let (sci, viewer) = (s.tokens.scientist.as_str(), s.tokens.viewer.as_str());
    let src = project(
        s.projects.path(),
        "slow",
        "print('ready', flush=True)\ntime.sleep(600)",
    );
    let (st, run) = srv.send(
        "POST",
        "/api/v1/trainings",
        Some(sci),
        Some(&training(&src, "slow", "1")),
    );
    assert_eq!(st, 202, "{run}");
    let id = run["id"].as_str().unwrap();
    wait_log(&srv, id, sci, "ready");
    let path = format!("/api/v1/trainings/{id}/cancel");
    assert_eq!(srv.call("POST", &path, Some(viewer)).0, 403);
    let (st, _) = srv.call("POST", &path, Some(sci));
    assert_eq!(st, 202);
    let done = srv.wait_final(
        &format!("/api/v1/trainings/{id}"),
        viewer,
        Duration::from_secs(120),
    );
    assert_eq!(done["state"], "cancelled", "{done:#}");
    let (st, again) = srv.call("POST", &path, Some(sci));
    assert_eq!(
        (st, again["error"]["code"].as_str()),
        (409, Some("already-over"))
    );
    assert_eq!(
        srv.call("POST", "/api/v1/trainings/nope/cancel", Some(sci))
            .0,
        404
    );
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead, waiting for whoever adopted it to reap it.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

fn a_server_killed_mid_training_has_the_run_started_again_by_the_next_with_its_whole_log(db: Db) {
    let s = Setup::new(db);
    let marker = s.projects.path().join("attempt-1.pid");
    let src = project(
        s.projects.path(),
        "crash",
        "m = os.environ['MARKER']\n\
         if not os.path.exists(m):\n    open(m, 'w').write(str(os.getpid()))\n    print('attempt 1', flush=True)\n    time.sleep(600)\n\
         print('attempt 2', flush=True)",
    );
    let mut body = training(&src, "crash", "1");
    body["env"] = json!({"MARKER": marker.to_str().unwrap()});
    let sci = s.tokens.scientist.as_str();
    let mut first = s.server(&["--lease", "2s"]);
    let (st, run) = first.send("POST", "/api/v1/trainings", Some(sci), Some(&body));
    assert_eq!(st, 202, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    wait_log(&first, &id, sci, "attempt 1");
    let step_pid: i32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();

    // SIGKILL: no lease let go, nothing written on the way out.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let second = s.server(&["--lease", "2s"]);
    let done = second.wait_final(
        &format!("/api/v1/trainings/{id}"),
        sci,
        Duration::from_secs(300),
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_ne!(done["owner"], run["owner"], "the new server holds it");
    let (_, log) = second.call("GET", &format!("/api/v1/trainings/{id}/logs"), Some(sci));
    let log = log.as_str().unwrap();
    let order = [
        "attempt 1",
        "its host stopped; starting it again",
        "attempt 2",
        &format!("run {id} succeeded"),
    ];
    let mut at = 0;
    for line in order {
        let found = log[at..]
            .find(line)
            .unwrap_or_else(|| panic!("'{line}' missing (in order) from\n{log}"));
        at += found + line.len();
    }
    assert!(
        process_gone(step_pid),
        "the first attempt's step (pid {step_pid}) was stopped"
    );
}

fn fifty_concurrent_creates_on_two_replicas_make_fifty_runs_each_started_once(db: Db) {
    let s = Setup::new(db);
    let a = s.server(&[]);
    let b = s.server(&[]);
    let src = project(s.projects.path(), "many", "");
    let sci = s.tokens.scientist.clone();
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let srv = if i % 2 == 0 { &a } else { &b };
                let (src, sci) = (&src, &sci);
                scope.spawn(move || {
                    // A server too busy to take a create says so (503
                    // busy, nothing started) and the client tries again.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    loop {
                        let (st, run) = srv.send(
                            "POST",
                            "/api/v1/trainings",
                            Some(sci),
                            Some(&training(src, "many", &format!("{i}"))),
                        );
                        if st == 503 && run["error"]["code"] == "busy" {
                            assert!(Instant::now() < deadline, "create {i} never taken");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                        assert_eq!(st, 202, "create {i}: {run}");
                        return run["id"].as_str().unwrap().to_string();
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 50, "no duplicate run");

    let mut owners = BTreeSet::new();
    for id in &ids {
        let run = a.wait_final(
            &format!("/api/v1/trainings/{id}"),
            &sci,
            Duration::from_secs(600),
        );
        assert_eq!(run["state"], "succeeded", "{run:#}");
        owners.insert(run["owner"].as_str().unwrap().to_string());
        let (_, log) = b.call("GET", &format!("/api/v1/trainings/{id}/logs"), Some(&sci));
        let log = log.as_str().unwrap();
        assert_eq!(
            log.matches(&format!("run {id}: training")).count(),
            1,
            "started once: {log}"
        );
        assert!(!log.contains("starting it again"), "{log}");
    }
    assert_eq!(owners.len(), 2, "both replicas ran some: {owners:?}");
    // One succeeded run per create; anything else is a create the server
    // called off as busy, which never ran.
    let (_, page) = a.call("GET", "/api/v1/trainings?limit=500", Some(&sci));
    let mut versions = BTreeSet::new();
    for run in page["items"].as_array().unwrap() {
        if run["state"] == "succeeded" {
            assert!(
                versions.insert(run["model"]["version"].as_str().unwrap().to_string()),
                "{run:#}"
            );
        } else {
            assert_eq!(run["state"], "cancelled", "{run:#}");
            assert!(run.get("startedAt").is_none(), "it never started: {run:#}");
        }
    }
    assert_eq!(versions.len(), 50);

    // Each run went queued -> running -> succeeded exactly once.
    let mut events = Sse::new(a.raw("GET", "/api/v1/events?since=0", Some(&sci), None));
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let done = |seen: &BTreeMap<String, Vec<String>>| {
        ids.iter().all(|id| {
            seen.get(id)
                .is_some_and(|s| s.last().map(String::as_str) == Some("succeeded"))
        })
    };
    while !done(&seen) {
        let (_, _, data) = events.next_event();
        seen.entry(data["runId"].as_str().unwrap().to_string())
            .or_default()
            .push(data["state"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(seen[id], ["queued", "running", "succeeded"], "{id}");
    }
}

#[test]
fn postgres_restarted_under_load_fails_requests_cleanly_then_recovers() {
    let mut s = Setup::new(Db::Postgres);
    let srv = s.server(&[]);
    let sci = s.tokens.scientist.clone();
    let src = project(s.projects.path(), "after", "");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::thread::scope(|scope| {
        // Load: lists and reads, as fast as they come back.
        let load = scope.spawn(|| {
            let mut seen = BTreeMap::<u16, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (st, body) = srv.call("GET", "/api/v1/trainings?limit=10", Some(&sci));
                if st != 200 {
                    assert_eq!(
                        body["error"]["code"], "unavailable",
                        "a clean failure: {body}"
                    );
                }
                *seen.entry(st).or_default() += 1;
            }
            seen
        });
        let pg = s.pg.as_mut().unwrap();
        // Down: wait until the API says so (it must, not hang or panic).
        pg.crash_and_restart_with(|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let (st, body) = srv.call("GET", "/ready", None);
                if st == 503 {
                    assert_eq!(body["error"]["code"], "not-ready");
                    let (st, body) = srv.call("GET", "/api/v1/trainings", Some(&sci));
                    assert_eq!(
                        (st, body["error"]["code"].as_str()),
                        (503, Some("unavailable")),
                        "{body}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the API never noticed the database was gone"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Up again: the API recovers by itself.
        let deadline = Instant::now() + Duration::from_secs(120);
        while srv.call("GET", "/ready", None).0 != 200 {
            assert!(Instant::now() < deadline, "the API never recovered");
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().unwrap()
    });
    assert!(
        statuses.keys().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    let (st, run) = srv.send(
        "POST",
        "/api/v1/trainings",
        Some(&sci),
        Some(&training(&src, "after", "1")),
    );
    assert_eq!(st, 202, "{run}");
    let id = run["id"].as_str().unwrap();
    let done = srv.wait_final(
        &format!("/api/v1/trainings/{id}"),
        &sci,
        Duration::from_secs(300),
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
}

on_both_stores!(
    a_training_is_planned_before_it_is_accepted_then_followed_to_its_model_and_packaged,
    bad_creates_are_refused_naming_the_field_and_refused_plans_keep_their_run,
    a_cancel_stops_the_steps_of_a_running_training,
    a_server_killed_mid_training_has_the_run_started_again_by_the_next_with_its_whole_log,
    fifty_concurrent_creates_on_two_replicas_make_fifty_runs_each_started_once,
);

/// More runs waiting their turn than a tokio blocking pool has threads
/// (512): with one run executing at a time, held until every create is
/// answered, 600 creates are all accepted and then all finish. (Each run
/// once held a thread of that pool while queued: past 512 the running ones
/// found no thread for their own blocking work and everything stopped.)
/// The no-op test toolchain keeps each run cheap.
#[test]
fn more_queued_runs_than_blocking_threads_all_finish() {
    let s = Setup::new(Db::Sqlite);
    s.l.ok(&["toolchain", "add", common::plugin("noop").to_str().unwrap()]);
    let srv = s.server(&["--max-runs", "1"]);
    let src = s.projects.path().join("empty");
    std::fs::create_dir(&src).unwrap();
    let src = src.to_str().unwrap().to_string();
    let sci = s.tokens.scientist.clone();
    // The first run takes the one slot and keeps it until `hold` exists:
    // every other run stays queued, whatever this machine's speed.
    let hold = s.projects.path().join("hold");
    let first = json!({"toolchain": "noop", "model": {"name": "noop", "version": "held"},
                       "source": {"uri": src}, "env": {"HOLD": hold.to_str().unwrap()}});
    let (st, held) = srv.send("POST", "/api/v1/trainings", Some(&sci), Some(&first));
    assert_eq!(st, 202, "{held}");
    const RUNS: usize = 600;
    const CLIENTS: usize = 8;
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (srv, src, sci) = (&srv, &src, &sci);
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for i in (c..RUNS).step_by(CLIENTS) {
                        let body = json!({"toolchain": "noop", "model": {"name": "noop", "version": format!("{i}")},
                                          "source": {"uri": src}});
                        let (st, run) = srv.send("POST", "/api/v1/trainings", Some(sci), Some(&body));
                        assert_eq!(st, 202, "create {i}: {run}");
                        ids.push(run["id"].as_str().unwrap().to_string());
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), RUNS);
    let (_, queued) = srv.call(
        "GET",
        "/api/v1/trainings?state=queued&limit=500",
        Some(&sci),
    );
    assert_eq!(
        queued["items"].as_array().unwrap().len(),
        500,
        "all wait behind the held run"
    );
    std::fs::write(&hold, b"").unwrap();
    // A hang guard, not a timing check.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (st, page) = srv.call(
            "GET",
            "/api/v1/trainings?state=succeeded&limit=500",
            Some(&sci),
        );
        assert_eq!(st, 200);
        let (_, rest) = srv.call("GET", "/api/v1/trainings?state=queued&limit=1", Some(&sci));
        let (_, running) = srv.call("GET", "/api/v1/trainings?state=running&limit=1", Some(&sci));
        if rest["items"].as_array().unwrap().is_empty()
            && running["items"].as_array().unwrap().is_empty()
        {
            let (_, failed) = srv.call("GET", "/api/v1/trainings?state=failed&limit=5", Some(&sci));
            assert!(failed["items"].as_array().unwrap().is_empty(), "{failed:#}");
            assert_eq!(page["items"].as_array().unwrap().len(), 500);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs stopped progressing: {rest:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for id in [&ids[0], &ids[RUNS / 2], &ids[RUNS - 1]] {
        let (_, run) = srv.call("GET", &format!("/api/v1/trainings/{id}"), Some(&sci));
        assert_eq!(run["state"], "succeeded", "{run:#}");
    }
}
