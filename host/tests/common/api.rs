//! `legion server` as an outside client meets it: started on a free
//! loopback port over a data directory, called over real HTTP, killed on
//! drop; its tokens made by `legion server token`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use super::postgres::Postgres;
use super::{free_port, Legion};

/// Where a test's server keeps its state.
#[derive(Debug, Clone, Copy)]
pub enum Db {
    /// The data dir's SQLite.
    Sqlite,
    /// A real PostgreSQL started for the test, its own database.
    Postgres,
}

/// A data dir on `db`, and the PostgreSQL server (kept running while the
/// returned guard lives) when there is one.
pub fn legion_on(db: Db) -> (Legion, Option<Postgres>) {
    match db {
        Db::Sqlite => (Legion::new(), None),
        Db::Postgres => {
            let pg = Postgres::start();
            (Legion::with_database(pg.database()), Some(pg))
        }
    }
}

/// Two tests of one body, `NAME::sqlite` and `NAME::postgres`: the same
/// API, the same assertions, on each store.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::common::api::Db::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::common::api::Db::Postgres)
            }
        }
    )*};
}

/// A token for `role`, made by `legion server token`: (token, entry).
pub fn token(l: &Legion, name: &str, role: &str) -> (String, Value) {
    let made = l.json(&["server", "token", name, "--role", role]);
    (
        made["token"].as_str().unwrap().to_string(),
        made["entry"].clone(),
    )
}

/// An admin's, a data scientist's and a viewer's tokens, and the tokens
/// file that holds their hashes.
pub struct Tokens {
    pub admin: String,
    pub scientist: String,
    pub viewer: String,
    pub file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tokens {
    pub fn new(l: &Legion) -> Self {
        let (admin, a) = token(l, "ops", "admin");
        let (scientist, d) = token(l, "alice", "data-scientist");
        let (viewer, v) = token(l, "dash", "viewer");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.json");
        std::fs::write(&file, json!({"tokens": [a, d, v]}).to_string()).unwrap();
        Tokens {
            admin,
            scientist,
            viewer,
            file,
            _dir: dir,
        }
    }
}

/// A running `legion server`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: Client,
}

impl Server {
    /// Starts `legion server` on `l`'s data directory with `args`; returns
    /// once it answers `/health`.
    pub fn start(l: &Legion, tokens: Option<&std::path::Path>, args: &[&str]) -> Self {
        let port = free_port();
        let mut cmd = l.cmd();
        cmd.args(["server", "--listen", &format!("127.0.0.1:{port}")]);
        if let Some(t) = tokens {
            cmd.arg("--tokens").arg(t);
        }
        cmd.args(args);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder().timeout(None).build().unwrap(),
        };
        // A hang guard, not a timing check.
        let deadline = Instant::now() + Duration::from_secs(120);
        while s.http.get(format!("{}/health", s.base)).send().is_err() {
            assert!(Instant::now() < deadline, "the server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// A request; the status and the body (JSON when it is JSON).
    pub fn call(&self, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(method, path, token, None)
    }

    /// A request with a JSON body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let r = self.raw(method, path, token, body);
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A request, the response unread (for streams).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().unwrap()
    }

    /// Waits (a hang guard of `limit`) until `GET path` answers a run in a
    /// final state; returns it.
    pub fn wait_final(&self, path: &str, token: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (st, run) = self.call("GET", path, Some(token));
            assert_eq!(st, 200, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "{path} never ended: {run:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server-Sent Events read from a response: (id, event, data) each.
pub struct Sse {
    lines: std::io::Lines<BufReader<Response>>,
}

impl Sse {
    pub fn new(r: Response) -> Self {
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            lines: BufReader::new(r).lines(),
        }
    }

    /// The next event (comments and keep-alives skipped).
    pub fn next_event(&mut self) -> (i64, String, Value) {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in self.lines.by_ref() {
            let line = line.expect("the event stream broke");
            if line.is_empty() {
                if !data.is_empty() {
                    let data: Value = serde_json::from_str(&data).unwrap();
                    return (id.expect("every event has an id"), event, data);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        panic!("the event stream ended");
    }
}
