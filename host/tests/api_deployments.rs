//! Deployments through `legion server` on the local executor, over real
//! HTTP as a pipeline calls them: a packaged image (read from the API's
//! own image list) served at the URL the deployment reports, answering
//! predictions; refusals naming the field; a model that cannot load kept
//! `failed` with why; the server SIGKILLed and its deployment served again
//! by the next one; deleted, and gone from the port too. On SQLite and on
//! a real PostgreSQL (`NAME::sqlite`, `NAME::postgres`).

mod common;

use std::time::{Duration, Instant};

use common::api::{legion_on, Db, Server, Tokens};
use serde_json::{json, Value};

/// Trains a `legion.python` model `name:1` (its `predict.py` as given)
/// on the command line and packages it into the local image store.
fn packaged(l: &common::Legion, name: &str, predict: &str) {
    common::train_with(l, name, "1", predict);
    let base = format!("oci:{}", common::registry::base_layout());
    l.ok(&["package", &format!("{name}:1"), "--base", &base]);
}

/// The image the API lists for `model`.
fn image_of(srv: &Server, token: &str, model: &str) -> String {
    let (st, images) = srv.call("GET", "/api/v1/images", Some(token));
    assert_eq!(st, 200, "{images}");
    images["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["model"] == model)
        .unwrap_or_else(|| panic!("no image of {model}: {images}"))["reference"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits (a hang guard) until the deployment is `state` and held by
/// another replica than `not_owner`; returns it.
fn wait_state(
    srv: &Server,
    token: &str,
    name: &str,
    state: &str,
    not_owner: Option<&Value>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (st, d) = srv.call("GET", &format!("/api/v1/deployments/{name}"), Some(token));
        assert_eq!(st, 200, "{d}");
        if d["state"] == state && not_owner.is_none_or(|o| &d["owner"] != o) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {state}: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Predicts through the deployment's MLflow endpoint: the model echoes
/// the first column.
fn predict(url: &str) -> Value {
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/invocations"))
        .json(&json!({"dataframe_split": {"columns": ["x"], "data": [[1.5], [2.5]]}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["predictions"].clone()
}

fn a_packaged_image_is_deployed_served_restarted_and_deleted(db: Db) {
    let (l, _pg) = legion_on(db);
    packaged(&l, "echo", common::ECHO_PREDICT);
    packaged(&l, "broken", "def load(d):\n    raise RuntimeError('no weights here')\ndef predict(m, frame):\n    return frame\n");
    let tokens = Tokens::new(&l);
    let server = |l: &common::Legion| Server::start(l, Some(&tokens.file), &["--lease", "2s"]);
    let srv = server(&l);
    let (sci, viewer) = (tokens.scientist.as_str(), tokens.viewer.as_str());
    let image = image_of(&srv, viewer, "echo:1");
    let body =
        json!({"name": "echo", "spec": {"image": image, "minReplicas": 2, "maxReplicas": 2}});

    // A viewer reads but does not deploy.
    assert_eq!(
        srv.send("POST", "/api/v1/deployments", Some(viewer), Some(&body))
            .0,
        403
    );

    // Created: 201 once it answers (202 while the model loads).
    let (st, d) = srv.send("POST", "/api/v1/deployments", Some(sci), Some(&body));
    assert!(st == 201 || st == 202, "{st} {d}");
    let d = wait_state(&srv, viewer, "echo", "ready", None);
    assert_eq!(d["model"], "echo:1");
    let url = d["url"].as_str().unwrap().to_string();
    assert_eq!(predict(&url), json!([1.5, 2.5]));
    let (st, list) = srv.call("GET", "/api/v1/deployments", Some(viewer));
    assert_eq!(st, 200);
    assert_eq!(list["items"][0]["name"], "echo", "{list}");

    // Refusals name the field; nothing is made.
    for (bad, field, status) in [
        (
            json!({"name": "echo", "spec": {"image": image}}),
            "already-exists",
            409,
        ),
        (
            json!({"name": "Bad_Name", "spec": {"image": image}}),
            "name: ",
            400,
        ),
        (
            json!({"name": "x", "spec": {"image": "oci:/nowhere:none"}}),
            "spec.image: ",
            400,
        ),
        (
            json!({"name": "x", "spec": {"image": image, "arguments": {"requestLog": "/etc/passwd"}}}),
            "spec.arguments.requestLog: ",
            400,
        ),
        (
            json!({"name": "x", "spec": {"image": image, "arguments": {"workers": "many"}}}),
            "spec.arguments: ",
            400,
        ),
        (
            json!({"name": "x", "spec": {"image": image, "minReplicas": 3, "maxReplicas": 2}}),
            "spec.minReplicas: ",
            400,
        ),
        (
            json!({"name": "x", "spec": {"image": image, "colour": "red"}}),
            "spec.colour: ",
            400,
        ),
    ] {
        let (st, e) = srv.send("POST", "/api/v1/deployments", Some(sci), Some(&bad));
        assert_eq!(st, status, "{bad}: {e}");
        let m = format!(
            "{}: {}",
            e["error"]["code"].as_str().unwrap(),
            e["error"]["message"].as_str().unwrap()
        );
        assert!(m.contains(field), "{bad}: {m}");
    }
    assert_eq!(
        srv.call("GET", "/api/v1/deployments/x", Some(viewer)).0,
        404
    );

    // A model that cannot load: 422, kept failed with the loader's words.
    let broken = json!({"name": "broken", "spec": {"image": image_of(&srv, viewer, "broken:1"), "arguments": {"maxLoadAttempts": "1"}}});
    let (st, e) = srv.send("POST", "/api/v1/deployments", Some(sci), Some(&broken));
    let failed = if st == 202 {
        wait_state(&srv, viewer, "broken", "failed", None)
    } else {
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (422, Some("failed")),
            "{e}"
        );
        e["error"]["deployment"].clone()
    };
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("no weights here"),
        "{failed}"
    );

    // The server killed outright: the next one serves it again, elsewhere.
    drop(srv);
    let srv = server(&l);
    let d = wait_state(&srv, viewer, "echo", "ready", Some(&d["owner"]));
    let moved = d["url"].as_str().unwrap().to_string();
    assert_eq!(predict(&moved), json!([1.5, 2.5]));
    assert_eq!(
        srv.call("GET", "/api/v1/deployments/broken", Some(viewer))
            .1["state"],
        "failed",
        "a failed deployment is not started again"
    );

    // Deleted: 202, then gone, and its port closed.
    for name in ["echo", "broken"] {
        let (st, d) = srv.call("DELETE", &format!("/api/v1/deployments/{name}"), Some(sci));
        assert_eq!((st, d["state"].as_str()), (202, Some("deleting")), "{d}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while srv.call("GET", "/api/v1/deployments", Some(viewer)).1["items"] != json!([]) {
        assert!(
            Instant::now() < deadline,
            "the deployments were never removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        reqwest::blocking::get(format!("{moved}/v2/health/live")).is_err(),
        "the model server still answers at {moved}"
    );
}

on_both_stores!(a_packaged_image_is_deployed_served_restarted_and_deleted);
