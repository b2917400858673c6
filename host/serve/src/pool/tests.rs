//! The pool against fake workers: in-process tasks that speak the frame
//! protocol over in-memory pipes, so batching, slicing, crashes, failed
//! loads and shutdown are tested without Python and without timing.

use std::sync::atomic::AtomicU32;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

use super::*;
use crate::frame::encode_values;
use crate::signature::Storage;
use crate::table::{Column, Values};

/// A request frame as the fake worker sees it.
#[derive(Debug, Clone)]
struct Request {
    batch: u64,
    rows: usize,
    /// Float and integer columns as floats; others skipped.
    columns: Vec<(String, Vec<f64>)>,
}

fn decode_request(buf: &[u8]) -> Request {
    let mut r = crate::frame::Reader::new(buf);
    assert_eq!(r.take(1).unwrap(), [1]);
    let batch = u64::from_le_bytes(r.array().unwrap());
    let rows = r.u32().unwrap() as usize;
    let ncols = u16::from_le_bytes(r.array().unwrap()) as usize;
    let mut heads = Vec::new();
    for _ in 0..ncols {
        let n = u16::from_le_bytes(r.array().unwrap()) as usize;
        let name = String::from_utf8(r.take(n).unwrap().to_vec()).unwrap();
        let storage = Storage::from_code(r.take(1).unwrap()[0]).unwrap();
        heads.push((name, storage));
    }
    let mut columns = Vec::new();
    for (name, storage) in heads {
        let values = (0..rows)
            .map(|_| {
                let b: [u8; 8] = r.array().unwrap();
                match storage {
                    Storage::F64 => f64::from_le_bytes(b),
                    _ => i64::from_le_bytes(b) as f64,
                }
            })
            .collect();
        columns.push((name, values));
    }
    Request {
        batch,
        rows,
        columns,
    }
}

fn result_frame(batch: u64, shape: &[u32], values: &Values) -> Vec<u8> {
    let mut f = vec![2u8];
    f.extend_from_slice(&batch.to_le_bytes());
    f.extend_from_slice(&[values.storage() as u8, shape.len() as u8]);
    for d in shape {
        f.extend_from_slice(&d.to_le_bytes());
    }
    encode_values(values, &mut f);
    f
}

fn error_frame(batch: u64, message: &str) -> Vec<u8> {
    let mut f = vec![3u8];
    f.extend_from_slice(&batch.to_le_bytes());
    f.extend_from_slice(&(message.len() as u32).to_le_bytes());
    f.extend_from_slice(message.as_bytes());
    f
}

/// What the fake worker does with a request.
#[derive(Clone, Copy)]
enum Reply {
    /// Each row's `x` times two, shape `[rows]`.
    Double,
    /// Shape `[rows, 0]`, no values.
    Empty,
    /// One row fewer than asked.
    Short,
    /// The model raises.
    Raise,
    /// The process dies.
    Die,
}

/// How the fake decides, per request: a gate it waits on before
/// answering, and a record of every batch it saw.
#[derive(Default)]
struct Script {
    /// Batches seen, in order.
    seen: StdMutex<Vec<Request>>,
    /// Signalled when a batch arrives.
    arrived: Notify,
    /// If set, the first batch waits for this before answering.
    gate: Option<Arc<Notify>>,
    /// Chooses the reply from the request's `x` values.
    reply_for: Option<fn(&[f64]) -> Reply>,
    /// Workers started.
    launches: AtomicU32,
    /// Whether loading fails.
    fail_load: bool,
    /// Whether the worker never says ready.
    never_ready: bool,
    /// Workers whose pipes closed (they saw the pool go).
    closed: AtomicU32,
}

async fn send(out: &mut DuplexStream, frame: &[u8]) -> std::io::Result<()> {
    out.write_all(&(frame.len() as u32).to_le_bytes()).await?;
    out.write_all(frame).await
}

async fn fake_worker(script: Arc<Script>, mut input: DuplexStream, mut out: DuplexStream) {
    if script.fail_load {
        let _ = send(
            &mut out,
            &error_frame(0, "ModuleNotFoundError: No module named 'nope'"),
        )
        .await;
        return;
    }
    if !script.never_ready {
        let ready = br#"{"loader":"fake"}"#;
        let mut f = vec![0u8];
        f.extend_from_slice(&(ready.len() as u32).to_le_bytes());
        f.extend_from_slice(ready);
        if send(&mut out, &f).await.is_err() {
            return;
        }
    }
    let mut first = true;
    loop {
        let mut len = [0u8; 4];
        if input.read_exact(&mut len).await.is_err() {
            script.closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        if input.read_exact(&mut buf).await.is_err() {
            return;
        }
        let req = decode_request(&buf);
        script.seen.lock().unwrap().push(req.clone());
        script.arrived.notify_one();
        if first {
            first = false;
            if let Some(gate) = &script.gate {
                gate.notified().await;
            }
        }
        let xs = req
            .columns
            .iter()
            .find(|(n, _)| n == "x")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let reply = script.reply_for.map(|f| f(&xs)).unwrap_or(Reply::Double);
        let frame = match reply {
            Reply::Double if xs.is_empty() => result_frame(
                req.batch,
                &[req.rows as u32],
                &Values::F64(vec![0.0; req.rows]),
            ),
            Reply::Double => result_frame(
                req.batch,
                &[req.rows as u32],
                &Values::F64(xs.iter().map(|x| x * 2.0).collect()),
            ),
            Reply::Empty => result_frame(req.batch, &[req.rows as u32, 0], &Values::F64(vec![])),
            Reply::Short => result_frame(
                req.batch,
                &[req.rows as u32 - 1],
                &Values::F64(vec![0.0; req.rows - 1]),
            ),
            Reply::Raise => error_frame(req.batch, "ValueError: bad input"),
            Reply::Die => return,
        };
        if send(&mut out, &frame).await.is_err() {
            return;
        }
    }
}

/// Starts fake workers that follow a script.
pub(crate) struct FakeLauncher(Arc<Script>);

impl FakeLauncher {
    /// Workers that double `x` (zeros without it), ready at once.
    pub(crate) fn doubling() -> Self {
        FakeLauncher(Arc::default())
    }
}

impl Launch for FakeLauncher {
    fn launch(&self, _index: usize) -> LaunchFuture {
        let script = self.0.clone();
        Box::pin(async move {
            script.launches.fetch_add(1, Ordering::SeqCst);
            let (pool_in, worker_in) = tokio::io::duplex(1 << 20);
            let (worker_out, pool_out) = tokio::io::duplex(1 << 20);
            tokio::spawn(fake_worker(script, worker_in, worker_out));
            Ok(WorkerIo {
                input: Box::new(pool_in),
                output: Box::new(pool_out),
                child: None,
                stderr: Arc::default(),
            })
        })
    }
}

fn config(workers: usize, max_queue: usize) -> PoolConfig {
    PoolConfig {
        workers,
        max_batch_rows: 256,
        max_batch_delay: Duration::ZERO,
        max_queue,
        max_load_attempts: 3,
    }
}

fn start(script: &Arc<Script>, config: PoolConfig) -> (Arc<Pool>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let pool = Pool::start(config, FakeLauncher(script.clone()), metrics.clone());
    (Arc::new(pool), metrics)
}

fn x(values: &[f64]) -> Table {
    Table {
        columns: vec![Column {
            name: "x".into(),
            values: Values::F64(values.to_vec()),
        }],
    }
}

/// A guard against a hang, never a race: every wait below is for an event.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the pool hung")
}

/// Waits until `n` batches have reached the fake worker.
async fn batches_seen(script: &Script, n: usize) {
    within(async {
        while script.seen.lock().unwrap().len() < n {
            script.arrived.notified().await;
        }
    })
    .await
}

/// Waits until `n` requests are queued.
async fn queued(pool: &Pool, n: usize) {
    within(async {
        while pool.queued() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
}

type Answer = tokio::task::JoinHandle<Result<Prediction, PredictError>>;

/// Predicts `table` on a task of its own.
fn spawn_predict(pool: &Arc<Pool>, table: Table) -> Answer {
    let pool = pool.clone();
    tokio::spawn(async move { pool.predict(table).await })
}

/// A loaded pool of one worker following `script`, whose first batch (the
/// request `x = first`) is held at a gate: returns the script, the pool,
/// the gate, and the first request.
async fn held(
    script: Script,
    max_queue: usize,
    first: f64,
) -> (Arc<Script>, Arc<Pool>, Arc<Notify>, Answer) {
    let gate = Arc::new(Notify::new());
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..script
    });
    let (pool, _) = start(&script, config(1, max_queue));
    within(pool.loaded()).await.unwrap();
    let answer = spawn_predict(&pool, x(&[first]));
    batches_seen(&script, 1).await;
    (script, pool, gate, answer)
}

#[tokio::test]
async fn queued_requests_merge_into_one_call_and_each_gets_its_own_rows() {
    // The first request occupies the worker, held at the gate.
    let (script, pool, gate, first) = held(Script::default(), 64, 100.0).await;
    // Ten more of one, two and three rows queue up behind it.
    let mut waiting = Vec::new();
    for i in 0..10 {
        let rows: Vec<f64> = (0..=(i % 3)).map(|r| (i * 10 + r) as f64).collect();
        let p = pool.clone();
        waiting.push((
            rows.clone(),
            tokio::spawn(async move { p.predict(x(&rows)).await }),
        ));
        queued(&pool, i + 1).await;
    }
    gate.notify_one();
    assert_eq!(
        within(first).await.unwrap().unwrap().values,
        Values::F64(vec![200.0])
    );
    for (rows, handle) in waiting {
        let p = within(handle).await.unwrap().unwrap();
        assert_eq!(p.shape, vec![rows.len()]);
        assert_eq!(
            p.values,
            Values::F64(rows.iter().map(|r| r * 2.0).collect()),
            "rows {rows:?} got another request's answer"
        );
    }
    let seen = script.seen.lock().unwrap();
    let sizes: Vec<usize> = seen.iter().map(|r| r.rows).collect();
    assert_eq!(
        sizes,
        [1, 19],
        "the ten queued requests are one predict call"
    );
}

#[tokio::test]
async fn tables_that_do_not_concatenate_go_in_separate_calls() {
    let (script, pool, gate, first) = held(Script::default(), 64, 1.0).await;
    let other = Table {
        columns: vec![
            Column {
                name: "x".into(),
                values: Values::F64(vec![5.0]),
            },
            Column {
                name: "y".into(),
                values: Values::F64(vec![0.0]),
            },
        ],
    };
    let tables = [x(&[2.0]), other, x(&[3.0])];
    let mut handles = Vec::new();
    for (i, t) in tables.into_iter().enumerate() {
        handles.push(spawn_predict(&pool, t));
        queued(&pool, i + 1).await;
    }
    gate.notify_one();
    within(first).await.unwrap().unwrap();
    let answers: Vec<Values> = futures_values(handles).await;
    assert_eq!(
        answers,
        [
            Values::F64(vec![4.0]),
            Values::F64(vec![10.0]),
            Values::F64(vec![6.0])
        ]
    );
    let sizes: Vec<usize> = script.seen.lock().unwrap().iter().map(|r| r.rows).collect();
    assert_eq!(
        sizes,
        [1, 1, 1, 1],
        "a table that does not fit starts a new call"
    );
}

async fn futures_values(handles: Vec<Answer>) -> Vec<Values> {
    let mut out = Vec::new();
    for h in handles {
        out.push(within(h).await.unwrap().unwrap().values);
    }
    out
}

#[tokio::test]
async fn unusable_results_fail_their_batch_and_the_worker_keeps_serving() {
    let script = Arc::new(Script {
        reply_for: Some(|xs| match xs[0] as i64 {
            1 => Reply::Empty,
            2 => Reply::Short,
            3 => Reply::Raise,
            _ => Reply::Double,
        }),
        ..Script::default()
    });
    let (pool, metrics) = start(&script, config(1, 8));
    within(pool.loaded()).await.unwrap();
    for (x0, want) in [
        (1.0, "no values per row"),
        (2.0, "shape [1] for 2 rows"),
        (3.0, "ValueError: bad input"),
    ] {
        let e = within(pool.predict(x(&[x0, 9.0]))).await.unwrap_err();
        assert!(matches!(e, PredictError::Model(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e}");
    }
    let ok = within(pool.predict(x(&[4.0]))).await.unwrap();
    assert_eq!(ok.values, Values::F64(vec![8.0]));
    assert_eq!(metrics.worker_restarts.get(), 0);
    assert_eq!(script.launches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_worker_that_dies_fails_its_requests_and_is_replaced() {
    let script = Arc::new(Script {
        reply_for: Some(|xs| {
            if xs[0] == 13.0 {
                Reply::Die
            } else {
                Reply::Double
            }
        }),
        ..Script::default()
    });
    let (pool, metrics) = start(&script, config(1, 8));
    within(pool.loaded()).await.unwrap();
    let e = within(pool.predict(x(&[13.0]))).await.unwrap_err();
    assert!(matches!(e, PredictError::WorkerCrashed(_)), "{e:?}");
    assert!(e.to_string().contains("the worker exited"), "{e}");
    let ok = within(pool.predict(x(&[2.0]))).await.unwrap();
    assert_eq!(ok.values, Values::F64(vec![4.0]));
    assert_eq!(metrics.worker_restarts.get(), 1);
    assert_eq!(script.launches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (_script, pool, gate, busy) = held(Script::default(), 1, 1.0).await;
    let waiting = spawn_predict(&pool, x(&[2.0]));
    queued(&pool, 1).await;
    let refused = pool.predict(x(&[3.0])).await.unwrap_err();
    assert!(matches!(refused, PredictError::Overloaded), "{refused:?}");
    gate.notify_one();
    assert!(within(busy).await.unwrap().is_ok());
    assert!(within(waiting).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_model_that_never_loads_fails_the_pool_after_bounded_attempts() {
    let script = Arc::new(Script {
        fail_load: true,
        ..Script::default()
    });
    let (pool, _) = start(&script, config(2, 8));
    let e = within(pool.loaded()).await.unwrap_err();
    assert!(matches!(*e, PoolError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("No module named 'nope'"), "{e}");
    let failed = within(pool.failed()).await;
    assert!(failed.to_string().contains("did not load"));
    assert_eq!(pool.ready_workers(), 0);
    // Each worker gives up after its attempts; no one retries forever.
    within(async {
        while script.launches.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(script.launches.load(Ordering::SeqCst) <= 6);
}

#[tokio::test]
async fn dropping_the_pool_stops_its_workers() {
    let script = Arc::new(Script {
        never_ready: true,
        ..Script::default()
    });
    let (pool, _) = start(&script, config(2, 8));
    within(async {
        while script.launches.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(pool);
    // The workers see their input close: nothing of the pool lives on.
    within(async {
        while script.closed.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_request_batched_with_good_ones_fails_alone() {
    let script = Script {
        // The model raises on any negative x in the batch it is given.
        reply_for: Some(|xs| {
            if xs.iter().any(|x| *x < 0.0) {
                Reply::Raise
            } else {
                Reply::Double
            }
        }),
        ..Script::default()
    };
    let (script, pool, gate, first) = held(script, 64, 1.0).await;
    let inputs = [2.0, -1.0, 3.0, 4.0, -5.0, 6.0];
    let mut handles = Vec::new();
    for (i, v) in inputs.iter().enumerate() {
        handles.push(spawn_predict(&pool, x(&[*v])));
        queued(&pool, i + 1).await;
    }
    gate.notify_one();
    within(first).await.unwrap().unwrap();
    for (v, h) in inputs.iter().zip(handles) {
        let got = within(h).await.unwrap();
        if *v < 0.0 {
            let e = got.unwrap_err();
            assert!(e.to_string().contains("ValueError: bad input"), "{v}: {e}");
        } else {
            assert_eq!(got.unwrap().values, Values::F64(vec![v * 2.0]), "{v}");
        }
    }
    // One merged call failed; then each request ran alone.
    let sizes: Vec<usize> = script.seen.lock().unwrap().iter().map(|r| r.rows).collect();
    assert_eq!(sizes, [1, 6, 1, 1, 1, 1, 1, 1]);
}
