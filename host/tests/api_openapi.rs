//! The API describes itself: the OpenAPI 3.1 document names every route
//! the server answers and nothing it does not, its page renders it, its
//! answers are fuzzed by schemathesis (PyPI) with auth on — no 5xx, every
//! response as documented — and `/metrics` counts what happened.

mod common;

use std::process::Command;

use common::api::{Server, Tokens};
use common::Legion;

#[test]
fn every_documented_operation_is_served_and_the_page_shows_each() {
    let l = Legion::new();
    let tokens = Tokens::new(&l);
    let srv = Server::start(&l, Some(&tokens.file), &[]);
    let (st, doc) = srv.call("GET", "/api/v1/openapi.json", None);
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut ops = Vec::new();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    assert!(ops.len() >= 19, "{} operations", ops.len());
    for (path, method, op) in &ops {
        // Streams are opened and dropped: only their head matters here.
        if path.ends_with("/events") || path.contains("logs") {
            continue;
        }
        let concrete = path
            .replace("{id}", "no-such-run")
            .replace("{name}", "no-such");
        let token = if op.get("x-legion-role").is_some() {
            Some(tokens.admin.as_str())
        } else {
            None
        };
        let (st, body) = srv.send(
            &method.to_uppercase(),
            &concrete,
            token,
            Some(&serde_json::json!({})),
        );
        assert_ne!(st, 405, "{method} {path}: {body}");
        if st == 404 {
            assert_ne!(
                body["error"]["message"], "no such resource",
                "{method} {path} is documented but not routed"
            );
        }
        let documented = op["responses"].as_object().unwrap();
        assert!(
            documented.contains_key(&st.to_string()),
            "{method} {concrete} answered {st}, not documented: {body}"
        );
    }
    // Undocumented ones are not served.
    assert_eq!(
        srv.call("GET", "/api/v2/trainings", Some(&tokens.admin)).0,
        404
    );
    let (st, body) = srv.call("PUT", "/api/v1/trainings", Some(&tokens.admin));
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (405, Some("method-not-allowed"))
    );

    // The page, from the same document.
    let page = srv
        .http
        .get(format!("{}/api/v1/docs", srv.base))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    for (_, _, op) in &ops {
        let id = op["operationId"].as_str().unwrap();
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "{id} missing from the page"
        );
    }
    assert!(html.contains("id=\"RunRecord\""), "schemas are on the page");
}

#[test]
fn metrics_count_requests_by_route_and_runs_by_state() {
    let l = Legion::new();
    common::train_tiny(&l, "tiny", "1");
    let tokens = Tokens::new(&l);
    let srv = Server::start(&l, Some(&tokens.file), &[]);
    for _ in 0..3 {
        assert_eq!(
            srv.call("GET", "/api/v1/trainings", Some(&tokens.viewer)).0,
            200
        );
    }
    assert_eq!(
        srv.call("GET", "/api/v1/trainings/x", Some(&tokens.viewer))
            .0,
        404
    );
    assert_eq!(srv.call("GET", "/api/v1/trainings", None).0, 401);
    let r = srv
        .http
        .get(format!("{}/metrics", srv.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    for line in [
        r#"legion_api_requests_total{route="/api/v1/trainings",method="GET",code="200"} 3"#,
        r#"legion_api_requests_total{route="/api/v1/trainings/{id}",method="GET",code="404"} 1"#,
        r#"legion_api_requests_total{route="/api/v1/trainings",method="GET",code="401"} 1"#,
        r#"legion_api_runs{kind="training",state="succeeded"} 1"#,
        "legion_api_runs_executing 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains("legion_api_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let l = Legion::new();
    common::train_tiny(&l, "tiny", "1");
    let tokens = Tokens::new(&l);
    let srv = Server::start(&l, Some(&tokens.file), &[]);
    let st =
        common::test_venv("test-schemathesis", &["schemathesis==4.32.5"]).join("bin/schemathesis");
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(&st)
        .args(["run", &format!("{}/api/v1/openapi.json", srv.base)])
        .args(["--header", &format!("Authorization: Bearer {}", tokens.admin)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        // Streams never end: they are left out of the fuzzing (the tests
        // that read them check them); `watch=true` is not in the document's
        // list parameters for the same reason.
        .args(["--exclude-path-regex", "(/events|/logs)$"])
        .args(["--max-examples", "60", "--seed", "1"])
        .args(["--report", "junit", "--report-dir"])
        .arg(report.path())
        .env("NO_COLOR", "1")
        // Its cache of crashes goes with the test, not into the checkout.
        .current_dir(report.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The number of cases, for docs/benchmarks.md.
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("test cases") || l.contains("passed") || l.contains("generated"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
}
