//! Hostile plugins against the sandbox: each misbehaviour yields a clear
//! error naming the toolchain and the limit, and the same plugin then serves
//! a normal call.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use legion::plan::TrainingRequest;
use legion::plugin::{Limits, Plugin, Runtime};
use legion::Error;
use wasmtime::component::Component;

fn limits() -> Limits {
    // Calls that do real work get a deadline far beyond it, so no test
    // depends on how busy the machine is; the endless loop gets a short
    // one of its own. The other limits are the defaults.
    Limits {
        deadline: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn hostile_with(limits: Limits, config: &[(&str, &str)]) -> Plugin {
    let runtime = Runtime::new(limits).expect("runtime");
    let component =
        Component::from_file(runtime.engine(), common::plugin("hostile")).expect("compile hostile");
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Plugin::new(&runtime, "hostile", &component, config).expect("link hostile")
}

fn hostile() -> Plugin {
    hostile_with(limits(), &[("greeting", "hi")])
}

fn request(behaviour: &str, args: &[&str]) -> TrainingRequest {
    TrainingRequest {
        entrypoint: Some(behaviour.to_string()),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..TrainingRequest::default()
    }
}

fn plan(
    p: &Plugin,
    behaviour: &str,
    args: &[&str],
    source: &Path,
) -> Result<legion::plan::Plan, Error> {
    p.plan_training(&request(behaviour, args), source)
}

/// The plugin still answers a normal call, with its configuration.
fn still_serves(p: &Plugin, source: &Path) {
    let plan = plan(p, "echo", &["after"], source).expect("normal call after a hostile one");
    assert_eq!(plan.steps[0].args, ["hi", "after"]);
}

#[test]
fn endless_loop_hits_the_deadline() {
    let p = hostile_with(
        Limits {
            deadline: Duration::from_millis(300),
            ..Limits::default()
        },
        &[("greeting", "hi")],
    );
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "loop", &[], src.path()).unwrap_err();
    // Stopped by the deadline (the error says so), not by anything else.
    assert!(matches!(err, Error::Deadline { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "toolchain 'hostile' plan-training: deadline of 300 ms exceeded; the call was stopped"
    );
    still_serves(&p, src.path());
}

#[test]
fn default_deadline_is_two_seconds() {
    let p = hostile_with(Limits::default(), &[("greeting", "hi")]);
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "loop", &[], src.path()).unwrap_err();
    assert!(
        err.to_string().contains("deadline of 2000 ms exceeded"),
        "{err}"
    );
    still_serves(&p, src.path());
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "alloc", &[], src.path()).unwrap_err();
    assert!(
        matches!(err, Error::MemoryCap { limit, .. } if limit == 64 << 20),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "toolchain 'hostile' plan-training: memory cap of 64 MiB exceeded; the call was stopped"
    );
    still_serves(&p, src.path());
}

#[test]
fn smaller_memory_cap_is_enforced() {
    let p = hostile_with(
        Limits {
            memory_bytes: 8 << 20,
            ..limits()
        },
        &[("greeting", "hi")],
    );
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "alloc", &[], src.path()).unwrap_err();
    assert!(
        err.to_string().contains("memory cap of 8 MiB exceeded"),
        "{err}"
    );
    still_serves(&p, src.path());
}

#[test]
fn panic_is_a_crash_with_the_panic_message() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let err = tracing::subscriber::with_default(subscriber, || plan(&p, "panic", &[], src.path()))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Trap { .. }), "{err:?}");
    // Said once, in the error: not also logged line by line, and without
    // Rust's advice to set RUST_BACKTRACE, which a plugin never sees.
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.contains("panicked on purpose"), "{logged}");
    assert!(!text.contains("RUST_BACKTRACE"), "{text}");
    assert!(
        text.starts_with("toolchain 'hostile' plan-training crashed:"),
        "{text}"
    );
    assert!(
        text.contains("hostile plugin panicked on purpose"),
        "the plugin's stderr is shown: {text}"
    );
    still_serves(&p, src.path());
}

#[test]
fn oversized_result_is_refused() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "huge", &[], src.path()).unwrap_err();
    match &err {
        Error::ResultTooLarge {
            toolchain,
            size,
            limit,
            ..
        } => {
            assert_eq!(toolchain, "hostile");
            assert_eq!(*limit, 1 << 20);
            assert!(*size > 8 << 20, "{size}");
        }
        other => panic!("expected ResultTooLarge, got {other:?}"),
    }
    assert!(
        err.to_string().contains("exceeds the cap of 1048576 bytes"),
        "{err}"
    );
    still_serves(&p, src.path());
}

#[test]
fn clocks_are_frozen_at_zero() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let plan = plan(&p, "clock", &[], src.path()).expect("reading the clock is allowed");
    // Wall time twice (nanoseconds since the epoch), then the monotonic
    // time that passed over a million additions: all zero.
    assert_eq!(plan.steps[0].args, ["0", "0", "0"]);
}

/// Log lines written while a test runs, through `tracing`.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn flood_of_stdout_is_capped_without_trapping() {
    // The flood itself takes time on a busy machine: a deadline far beyond
    // it, so the test checks the cap, not the machine's speed.
    let limits = Limits {
        deadline: Duration::from_secs(120),
        ..Limits::default()
    };
    let cap = limits.max_output_bytes;
    let p = hostile_with(limits, &[]);
    let src = tempfile::tempdir().unwrap();
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .finish();
    let plan = tracing::subscriber::with_default(subscriber, || plan(&p, "spam", &[], src.path()))
        .expect("a chatty plugin still succeeds");
    assert_eq!(plan.steps[0].name, "spam");
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    // ` INFO line 7 toolchain="hostile" call="plan-training" stream="stdout"`
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("stream=\"stdout\""))
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("INFO ")?
                .split(" toolchain=")
                .next()
        })
        .collect();
    let kept_bytes: usize = kept.iter().map(|l| l.len() + 1).sum();
    let total: usize = (0..200_000).map(|i| format!("line {i}\n").len()).sum();
    // The last kept line may be cut short by the cap (and so lack its newline).
    assert!(
        !kept.is_empty() && kept_bytes <= cap + 1,
        "{} lines, {kept_bytes} bytes kept",
        kept.len()
    );
    assert_eq!(kept[0], "line 0", "the first lines are the ones kept");
    let dropped = format!("{} bytes of stdout dropped past the cap", total - cap);
    assert!(text.contains(&dropped), "expected {dropped:?} in the log");
}

#[test]
fn files_outside_the_preopens_cannot_be_read() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("visible.txt"), "inside").unwrap();
    // The source itself is readable.
    let ok =
        plan(&p, "read-file", &["/source/visible.txt"], src.path()).expect("source is readable");
    assert_eq!(ok.steps[0].args, ["inside"]);
    // Nothing else is: absolute host paths, and escapes from the preopen.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "secret").unwrap();
    let escape = format!("/source/../{}", secret.strip_prefix("/").unwrap().display());
    for path in [
        "/etc/passwd",
        secret.to_str().unwrap(),
        escape.as_str(),
        "/source/../../etc/passwd",
    ] {
        let err = plan(&p, "read-file", &[path], src.path()).unwrap_err();
        match &err {
            Error::Toolchain {
                toolchain, error, ..
            } => {
                assert_eq!(toolchain, "hostile");
                assert!(
                    error.to_string().contains(&format!("open {path}")),
                    "{error}"
                );
            }
            other => panic!("reading {path} should fail inside the plugin, got {other:?}"),
        }
    }
    still_serves(&p, src.path());
}

#[test]
fn source_is_read_only() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let err = plan(&p, "write-source", &[], src.path()).unwrap_err();
    assert!(err.to_string().contains("write /source/planted"), "{err}");
    assert!(
        !src.path().join("planted").exists(),
        "the plugin wrote into the source"
    );
}

#[test]
fn sockets_are_refused() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let err = plan(&p, "connect", &[&addr], src.path()).unwrap_err();
    assert!(
        err.to_string().contains(&format!("connect {addr}")),
        "{err}"
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the plugin reached the listener: {other:?}"),
    }
    still_serves(&p, src.path());
}

#[test]
fn environment_is_empty() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    std::env::var("PATH").expect("the host has an environment");
    let plan = plan(&p, "env", &[], src.path()).unwrap();
    assert!(
        plan.steps[0].args.is_empty(),
        "plugin saw {:?}",
        plan.steps[0].args
    );
}

#[test]
fn calls_are_isolated_from_each_other() {
    // Each call gets a fresh store: memory grown by one call is not there
    // for the next, so many bombs in a row each fail on the cap alone.
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let err = plan(&p, "alloc", &[], src.path()).unwrap_err();
        assert!(matches!(err, Error::MemoryCap { .. }), "{err:?}");
    }
    still_serves(&p, src.path());
}

#[test]
fn concurrent_calls_each_get_their_own_sandbox() {
    let p = hostile();
    let src = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                let dir = src.path().to_path_buf();
                s.spawn(move || {
                    let arg = format!("t{i}");
                    let plan = plan(&p, "echo", &[&arg], &dir).unwrap();
                    assert_eq!(plan.steps[0].args, ["hi", arg.as_str()]);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}
