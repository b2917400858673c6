//! `legion server --executor kube`: the API on a cluster, over real HTTP,
//! with the real operator (`legion operator run`) on the same PostgreSQL,
//! a real registry, and the Kubernetes API emulator in place of a cluster
//! (the test plays the Job controller and the kubelet, as `operator.rs`).
//! What is checked is what a user of both sides sees: every create is an
//! object `kubectl get` shows, every object's run is one the API lists,
//! logs outlive the operator's files, a cancel deletes the object.

mod common;

use std::time::{Duration, Instant};

use common::api::{Server, Tokens};
use common::cluster::{path, run_id, Cluster, Operator, GROUP, NS};
use common::postgres::Postgres;
use common::Legion;
use serde_json::{json, Value};

/// Waits (a hang guard, not a timing check) until `holds` is true of what
/// `look` returns.
fn until<T>(what: &str, mut look: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(v) = look() {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The field a 400 names (its message starts with it).
fn field(e: &Value) -> &str {
    let m = e["error"]["message"].as_str().unwrap_or_default();
    m.split(':').next().unwrap_or_default()
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn on_a_cluster_the_api_creates_the_operators_objects_and_serves_their_runs() {
    let pg = Postgres::start();
    let db = pg.database();
    let cluster = Cluster::start();
    let op_home = Legion::with_database(db.clone());
    let op = Operator::start(&op_home, &cluster, &[]);
    cluster.toolchain("python", "python");
    cluster.toolchain("docker-rest", "docker-rest");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    cluster.wait_phase(&op, &path("toolchains", "docker-rest"), "Ready");

    // The API: its own data directory, the operator's database.
    let api_home = Legion::with_database(db.clone());
    let t = Tokens::new(&api_home);
    let repo = cluster.repo.path().to_str().unwrap().to_string();
    let kubeconfig = cluster.emu.kubeconfig.to_str().unwrap().to_string();
    let s = Server::start(
        &api_home,
        Some(&t.file),
        &[
            "--executor",
            "kube",
            "--namespace",
            NS,
            "--kubeconfig",
            &kubeconfig,
            "--allow-path",
            &repo,
        ],
    );
    let objects = |plural: &str| items(&cluster.get(&format!("{GROUP}/{plural}")).unwrap());
    let training = |version: &str, source: &str| {
        json!({
            "toolchain": "python",
            "model": {"name": "tiny", "version": version},
            "source": {"uri": source, "reference": "main"},
            "image": cluster.base,
        })
    };
    let source = format!("file://{repo}");

    // Refused before anything is created, naming the field.
    let (st, e) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.viewer),
        Some(&training("1", &source)),
    );
    assert_eq!(st, 403, "{e}");
    let (st, e) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.scientist),
        Some(&training("1", &repo)),
    );
    assert_eq!((st, field(&e)), (400, "source.uri"), "{e}");
    let mut unknown = training("1", &source);
    unknown["toolchain"] = json!("nope");
    let (st, e) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.scientist),
        Some(&unknown),
    );
    assert_eq!((st, field(&e)), (400, "toolchain"), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no Toolchain 'nope'"),
        "{e}"
    );
    assert!(
        objects("modeltrainings").is_empty(),
        "a refused create made an object"
    );
    // Refused by the operator at admission (its Toolchain is not ready):
    // 400 with the operator's words, and the object, which never ran, gone.
    cluster.toolchain("broken", "no-such-builtin");
    cluster.wait_phase(&op, &path("toolchains", "broken"), "Failed");
    let mut broken = training("1", &source);
    broken["toolchain"] = json!("broken");
    let (st, e) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.scientist),
        Some(&broken),
    );
    assert_eq!((st, field(&e)), (400, "spec"), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Toolchain 'broken' is not ready"),
        "{e}"
    );
    until("the refused object deleted", || {
        objects("modeltrainings").is_empty().then_some(())
    });

    // A training: one object, planned by the operator, answered with its run.
    let (st, run) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.scientist),
        Some(&training("1", &source)),
    );
    assert_eq!(st, 202, "{run}\noperator log:\n{}", op.log());
    let id = run["id"].as_str().unwrap().to_string();
    let mts = objects("modeltrainings");
    assert_eq!(mts.len(), 1, "{mts:#?}");
    let mt = &mts[0];
    assert_eq!(run_id(mt), id, "the object's run is the API's");
    assert_eq!(
        mt["metadata"]["labels"]["legion-platform.org/created-by"],
        "legion-api"
    );
    assert_eq!(
        mt["metadata"]["annotations"]["legion-platform.org/requested-by"],
        "alice"
    );
    assert_eq!(mt["spec"]["model"], json!({"name": "tiny", "version": "1"}));
    let name = mt["metadata"]["name"].as_str().unwrap().to_string();

    // The pod succeeds; the API reads the run the operator finished.
    let job = cluster.wait_job(&op, &id);
    let report = cluster.succeed_training(&job);
    let done_run = s.wait_final(
        &format!("/api/v1/trainings/{id}"),
        &t.viewer,
        Duration::from_secs(600),
    );
    assert_eq!(done_run["state"], "succeeded", "{done_run:#}\n{}", op.log());
    assert_eq!(done_run["modelDigest"], report["modelDigest"]);
    let mt = cluster.wait_phase(&op, &path("modeltrainings", &name), "Succeeded");
    assert_eq!(mt["status"]["modelDigest"], done_run["modelDigest"]);

    // Its log, with the pod's lines; still whole once the operator's file
    // is gone (an API pod never sees the operator's files: the shared
    // store keeps a copy).
    let (st, log) = s.call(
        "GET",
        &format!("/api/v1/trainings/{id}/logs"),
        Some(&t.viewer),
    );
    assert_eq!(st, 200);
    let log = log.as_str().unwrap().to_string();
    assert!(log.contains("[collect] stored"), "{log}");
    let file = done_run["logPath"].as_str().unwrap();
    std::fs::remove_file(file).unwrap();
    let (st, stored) = s.call(
        "GET",
        &format!("/api/v1/trainings/{id}/logs"),
        Some(&t.viewer),
    );
    assert_eq!((st, stored.as_str()), (200, Some(log.as_str())));
    let followed = s
        .raw(
            "GET",
            &format!("/api/v1/trainings/{id}/logs?follow=true"),
            Some(&t.viewer),
            None,
        )
        .text()
        .unwrap();
    assert_eq!(followed, log);

    // A packaging of that run: its object names the training's object.
    let (st, e) = s.send(
        "POST",
        "/api/v1/packagings",
        Some(&t.scientist),
        Some(&json!({"trainingRef": id, "base": cluster.base})),
    );
    assert_eq!(st, 202, "{e}\noperator log:\n{}", op.log());
    let pid = e["id"].as_str().unwrap().to_string();
    let mps = objects("modelpackagings");
    assert_eq!(mps.len(), 1, "{mps:#?}");
    assert_eq!(mps[0]["spec"]["trainingRef"], name.as_str());
    assert_eq!(run_id(&mps[0]), pid);
    let job = cluster.wait_job(&op, &pid);
    let image = cluster.succeed_packaging(&job);
    let packaged = s.wait_final(
        &format!("/api/v1/packagings/{pid}"),
        &t.viewer,
        Duration::from_secs(600),
    );
    assert_eq!(packaged["state"], "succeeded", "{packaged:#}\n{}", op.log());
    assert_eq!(packaged["imageDigest"], image["imageDigest"]);
    let image_ref = packaged["imageRef"].as_str().unwrap().to_string();

    // A deployment of that image is a ModelDeployment; an image no
    // packaging made is refused; delete removes the object.
    let (st, e) = s.send(
        "POST",
        "/api/v1/deployments",
        Some(&t.scientist),
        Some(&json!({"name": "tiny", "spec": {"image": "elsewhere/x:1"}})),
    );
    assert_eq!((st, field(&e)), (400, "spec.image"), "{e}");
    let (st, d) = s.send(
        "POST",
        "/api/v1/deployments",
        Some(&t.scientist),
        Some(&json!({"name": "tiny", "spec": {"image": image_ref, "minReplicas": 2, "maxReplicas": 2}})),
    );
    assert_eq!(st, 202, "{d}");
    assert_eq!(
        (d["state"].as_str(), d["model"].as_str()),
        (Some("deploying"), Some("tiny:1"))
    );
    let md = cluster
        .get(&path("modeldeployments", "tiny"))
        .expect("a ModelDeployment");
    assert_eq!(md["spec"]["image"], image_ref.as_str());
    assert_eq!(md["spec"]["minReplicas"], 2);
    let (st, again) = s.send(
        "POST",
        "/api/v1/deployments",
        Some(&t.scientist),
        Some(&json!({"name": "tiny", "spec": {"image": image_ref}})),
    );
    assert_eq!(st, 409, "{again}");
    let (st, list) = s.call("GET", "/api/v1/deployments", Some(&t.viewer));
    assert_eq!(st, 200);
    assert_eq!(items(&list).len(), 1, "{list}");
    assert_eq!(list["items"][0]["name"], "tiny");
    let (st, gone) = s.call("DELETE", "/api/v1/deployments/tiny", Some(&t.scientist));
    assert_eq!(
        (st, gone["state"].as_str()),
        (202, Some("deleting")),
        "{gone}"
    );
    until("the ModelDeployment removed", || {
        cluster
            .get(&path("modeldeployments", "tiny"))
            .is_none()
            .then_some(())
    });
    assert_eq!(
        s.call("GET", "/api/v1/deployments/tiny", Some(&t.viewer)).0,
        404
    );

    // A cancel deletes the object; its run ends cancelled.
    let (st, run2) = s.send(
        "POST",
        "/api/v1/trainings",
        Some(&t.scientist),
        Some(&training("2", &source)),
    );
    assert_eq!(st, 202, "{run2}");
    let id2 = run2["id"].as_str().unwrap().to_string();
    let (st, c) = s.call(
        "POST",
        &format!("/api/v1/trainings/{id2}/cancel"),
        Some(&t.scientist),
    );
    assert_eq!(st, 202, "{c}");
    let cancelled = s.wait_final(
        &format!("/api/v1/trainings/{id2}"),
        &t.viewer,
        Duration::from_secs(600),
    );
    assert_eq!(cancelled["state"], "cancelled", "{cancelled:#}");
    until("the cancelled training's object removed", || {
        objects("modeltrainings")
            .iter()
            .all(|o| o["status"]["runId"] != id2.as_str())
            .then_some(())
    });
    let (st, e) = s.call(
        "POST",
        &format!("/api/v1/trainings/{id2}/cancel"),
        Some(&t.scientist),
    );
    assert_eq!(st, 409, "{e}");

    // An object made with kubectl is a run the API lists.
    cluster.training("direct-1", "python");
    let direct = run_id(&cluster.started(&op, "modeltrainings", "direct-1"));
    until("the kubectl-made run listed by the API", || {
        let (_, page) = s.call("GET", "/api/v1/trainings?limit=500", Some(&t.viewer));
        items(&page)
            .iter()
            .any(|r| r["id"] == direct.as_str())
            .then_some(())
    });

    // Toolchains on a cluster are objects: an upload is refused, saying so.
    let form = reqwest::blocking::multipart::Form::new().part(
        "component",
        reqwest::blocking::multipart::Part::bytes(b"\0asm".to_vec()).file_name("x.wasm"),
    );
    let r = s
        .http
        .post(format!("{}/api/v1/toolchains", s.base))
        .bearer_auth(&t.admin)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "cluster-mode", "{e}");
    drop(pg);
}
